"""Ptyrodactyl workflows."""
