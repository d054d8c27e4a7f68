"""Kept for scrapyd-deploy, which builds the project egg with ``setup.py bdist_egg``.

Metadata lives in pyproject.toml; the ``scrapy`` entry point tells Scrapyd where the
settings module is.
"""

from setuptools import find_packages, setup

setup(
    name="harvester",
    version="0.1.0",
    packages=find_packages(include=["harvester", "harvester.*"]),
    include_package_data=True,
    package_data={"harvester": ["migrations/*.mako", "demo/*.toml", "demo/site/**/*"]},
    entry_points={"scrapy": ["settings = harvester.settings"]},
)
