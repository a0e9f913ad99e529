"""Moved: the main job is `python -m report` (the layer above the model packages).

This alias keeps `python -m mnistgen.report`, the command of earlier notes and READMEs, working.
"""
if __name__ == "__main__":
    import runpy
    runpy.run_module("report", run_name="__main__", alter_sys=True)
