"""Ptyrodactyl simul."""
