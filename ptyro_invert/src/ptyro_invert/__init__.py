"""Ptyrodactyl invert."""
