"""Tool scripts, run as `python -m misc.<script>`: compare runs, plot runs, the model table.

Nothing in the library (data/, models/, training/, evaluation/) imports from here.
"""
