"""The main job: evaluate every shipped model in models/ and print one table (`python -m report`).

The layer above the model packages: `table.py` declares which figures, references and targets the
table shows; the model packages only compute numbers (`figures(...)`) and know nothing of it.
"""
