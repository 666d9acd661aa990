"""The sea-ice task package: ViSual_IceD (SAR + multispectral, two encoders) -> a 0 water / 1 ice GeoTIFF."""
from mis.spec import Command, ModelFamily, ShippedModel, TaskSpec

SPEC = TaskSpec(
    name="seaice",
    title="ViSual_IceD sea-ice segmentation from SAR + multispectral GeoTIFFs (aligned, windowed, COG out)",
    panel="Remote sensing",
    pipeline="mis.pipelines.seaice.pipeline:SeaIcePipeline",
    families=(
        # Layer names follow upstream's Keras model; its `.h5` weights map by name (docs/visual_iced_keymap.md).
        # The released code publishes no trained weights. Defaults: the paper's network on one HH channel.
        ModelFamily("visual_iced", "mis.models.visual_iced", "VisualIced", "VisualIcedConfig",
                    import_defaults={"sar_channels": 1, "msi_channels": 3, "classes": 2},
                    import_preprocessing="mis.pipelines.seaice.pipeline:import_preprocessing",
                    import_reader="mis.pipelines.seaice.keras_import:keras_state_dict"),
    ),
    models=(
        ShippedModel("seaice_visual_iced_demo", "seaice_visual_iced_demo.safetensors",
                     "ViSual_IceD demo config (Sentinel-1 HH/HV + Sentinel-2 B02/B03/B04/B08, MSI 4x finer); "
                     "60 synthetic scenes, 1000 steps",
                     quality="F1 0.993 on 24 fresh synthetic scenes with clouds and wind (stacked-input U-Net 0.991); "
                             "trained on synthetic scenes only, not validated on real imagery",
                     instead="for real use train on your paired scenes with masks (`mis train seaice`)"),
    ),
    default_model="seaice_visual_iced_demo",
    fast_model="seaice_visual_iced_demo",
    commands=(
        Command("seaice", "mis.cli.seaice:seaice"),
        Command("seaice", "mis.cli.seaice:train_seaice", group="train"),
        Command("seaice", "mis.cli.seaice:evaluate_seaice", group="evaluate"),
    ),
    input_kinds=("raster",),
    demo="mis.pipelines.seaice.demo:demo",
    sample_data="mis.pipelines.seaice.synthetic:write_sample_data",
    api={"SeaIcePipeline": "mis.pipelines.seaice.pipeline", "SeaIceOutput": "mis.pipelines.seaice.pipeline"},
)
