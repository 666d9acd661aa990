"""The CT segmentation task package: PCT-Net (MIS-FM) with Volume Fusion pretraining."""
from mis.spec import Command, KeyMap, ModelFamily, ShippedModel, TaskSpec

SPEC = TaskSpec(
    name="ct_segmentation",
    title="3D CT organ segmentation with PCT-Net (MIS-FM)",
    panel="Medical",
    pipeline="mis.pipelines.ct_segmentation.pipeline:CTSegmentationPipeline",
    families=(
        # Module names equal MIS-FM's `net/pct_net.py`, so the key map is the identity after unwrapping
        # (docs/pctnet_keymap.md). The released CT10k weights are the 5-class Volume Fusion model, 64x128x128.
        ModelFamily("pctnet", "mis.models.pctnet", "PCTNet", "PCTNetConfig", key_map=KeyMap(),
                    import_defaults={"class_num": 5, "input_size": [64, 128, 128]}),
    ),
    models=(
        ShippedModel("ct_pctnet_demo", "ct_pctnet_demo.safetensors",
                     "PCT-Net fast configuration, 6 organs, 4 mm, partial-scan training; 40 phantoms + 1 real CT",
                     quality="mean Dice 0.913 on fresh synthetic phantoms, 0.92 on 40 mm slabs of them; not "
                             "validated on patients",
                     instead="for real use train on your labelled CT (`mis train segment`) or import MIS-FM weights "
                             "(`mis models import`)"),
    ),
    # Only the fast configuration can be trained on a CPU here, so it is both the default and the --fast model
    # until a full-size checkpoint is imported.
    default_model="ct_pctnet_demo",
    fast_model="ct_pctnet_demo",
    commands=(
        Command("segment", "mis.cli.segment:segment"),
        Command("ct", "mis.cli.segment:pretrain_ct", group="pretrain"),
        Command("segment", "mis.cli.segment:train_segment", group="train"),
        Command("segment", "mis.cli.segment:evaluate_segment", group="evaluate"),
    ),
    groups={"pretrain": "Self-supervised pretraining (one sub-command per modality)."},
    input_kinds=("nifti", "dicom"),
    demo="mis.pipelines.ct_segmentation.demo:demo",
    sample_data="mis.pipelines.ct_segmentation.sample_data:write_sample_data",
    api={"CTSegmentationPipeline": "mis.pipelines.ct_segmentation.pipeline",
         "SegmentationResult": "mis.pipelines.ct_segmentation.pipeline",
         "read_volume": "mis.io.volume",
         "write_nifti": "mis.io.nifti",
         "make_phantom": "mis.pipelines.ct_segmentation.phantom"},
)
