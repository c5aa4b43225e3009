"""The VRP shell: command tree, matcher, line editor, views, levels and renderers."""
