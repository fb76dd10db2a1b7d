"""Immersions: hear and see how a neural network listens."""

__version__ = "0.1.0"
