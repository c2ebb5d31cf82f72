"""Build script: pure-Python package; the compiled extension (csrc/) is added by its own issue."""
from setuptools import setup

setup()
