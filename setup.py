"""Packaging beyond what pyproject.toml can say: the web UI (top-level ``web/``) ships inside the
package as ``xiajiao/web``, so an installed Xiajiao finds its templates and static files."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["xiajiao*", "plugins*"]), "xiajiao.web"], package_dir={"xiajiao.web": "web"})
