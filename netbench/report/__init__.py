"""Renderers: one small module per output format. Only this package imports rich and matplotlib."""
