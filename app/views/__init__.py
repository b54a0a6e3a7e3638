"""The lab's pages: one module per page, each with a ``render()`` function."""
