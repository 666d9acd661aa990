"""The task packages that make up `mis`: adding a task adds one line here (see docs/adding_a_task.md).

Each name is a folder `mis/pipelines/<name>/` whose `spec.py` declares the task (`mis.spec.TaskSpec`).
The order is the order of `mis --help`, `mis models list` and `mis demo`.
"""
TASK_PACKAGES = (
    "ct_segmentation",
    "battery",
    "vocoder",
    "bwe",
    "interpolate",
    "seaice",
    "count",
)
