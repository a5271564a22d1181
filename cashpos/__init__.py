"""cashpos: real-time cash positions for Korea's 243 local governments."""

__version__ = "0.1.0"
