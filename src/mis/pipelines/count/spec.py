"""The crowd-counting task package: M-SFANet / M-SegNet (an image -> a density map whose sum is the head count)."""
from mis.spec import Command, KeyMap, ModelFamily, ShippedModel, TaskSpec

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
    models=(
        ShippedModel("count_msfanet_demo", "count_msfanet_demo.safetensors",
                     "M-SFANet demo config (a quarter of upstream's widths, 1.44 M parameters, ReLU density head) "
                     "trained from scratch on 5000 synthetic crowd scenes, 17000 steps (bf16, count loss L1 + L2, "
                     "Kaiming-normal conv weights), the last step's moving-average weights; counts in 128 px tiles "
                     "(its training crop)",
                     quality="MAE 22.0 (9.4 % of the mean count 235) on 300 fresh synthetic scenes (predicting the "
                             "mean: 303); 9.0 % on 300 others; trained on synthetic scenes only: the real ShanghaiTech "
                             "sample with 170 heads counts 3379",
                     instead="for real use import the released M-SFANet weights (`mis models import --task count`) "
                             "or train on annotated images (`mis train count`)"),
        ShippedModel("count_msegnet_demo", "count_msegnet_demo.safetensors",
                     "M-SegNet demo config (a quarter of upstream's widths, 0.61 M parameters, ReLU density head) "
                     "trained from scratch on 5000 synthetic crowd scenes, 17000 steps (bf16), the last step's "
                     "moving-average weights",
                     quality="MAE 23.9 (10.1 % of the mean count 235) on 300 fresh synthetic scenes (predicting the "
                             "mean: 303); trained on synthetic scenes only: the real ShanghaiTech sample with 170 heads "
                             "counts 3314",
                     instead="for real use import the released M-SegNet weights (`mis models import --task count "
                             "--config '{\"variant\": \"m-segnet\"}'`) or train on annotated images"),
    ),
    default_model="count_msfanet_demo",
    fast_model="count_msegnet_demo",
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
