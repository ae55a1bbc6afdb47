"""Recipes: one self-contained file per stage (see each file's docstring for its launch commands).

Recipes do not import each other. This file exists only so that ``tune run recipes/<x>.py`` resolves
``recipes`` to this folder: torchtune installs a top-level package of the same name, and a regular
package (this one, found first from the repository root) wins over it.
"""
