"""Tests of the bot package.

discord.py imports ``audioop`` (deprecated in 3.11, for voice we never use); pytest turns
warnings into errors, so discord is imported once here with that one warning ignored.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord  # noqa: F401
