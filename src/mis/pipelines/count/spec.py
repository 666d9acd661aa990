"""The crowd-counting task package: M-SFANet / M-SegNet (an image -> a density map whose sum is the head count)."""
from mis.spec import Command, KeyMap, ModelFamily, TaskSpec

SPEC = TaskSpec(
    name="count",
    title="M-SFANet / M-SegNet crowd counting: count, density map and overlay per image, large images tiled",
    panel="Vision",
    pipeline="mis.pipelines.count.pipeline:CountPipeline",
    families=(
        # Module names are upstream's (models/M_SFANet.py, models/M_SegNet.py): the released ShanghaiTech `.pth`
        # files load by name after `module.` is stripped; upstream's unused conv_out BatchNorm is dropped
        # (docs/sfanet_keymap.md). Defaults: M-SFANet; M-SegNet takes --config '{"variant": "m-segnet"}'.
        ModelFamily("sfanet", "mis.models.sfanet", "SFANet", "SFANetConfig",
                    key_map=KeyMap(drop_prefixes=("conv_out.bn.",)),
                    import_preprocessing="mis.pipelines.count.pipeline:import_preprocessing"),
    ),
    commands=(
        Command("count", "mis.cli.count:count"),
        Command("count", "mis.cli.count:train_count", group="train"),
        Command("count", "mis.cli.count:evaluate_count", group="evaluate"),
    ),
    input_kinds=("image",),
    demo="mis.pipelines.count.demo:demo",
    sample_data="mis.pipelines.count.synthetic:write_sample_data",
    api={"CountPipeline": "mis.pipelines.count.pipeline", "CountOutput": "mis.pipelines.count.pipeline"},
)
