"""headpuppet's first-party plugins (import name ``headpuppet_plugins``).

Each module is registered through the ``headpuppet`` entry-point group in pyproject.toml, the same
way a third-party package registers its own; see README.md here for the plugin author's guide.
"""
