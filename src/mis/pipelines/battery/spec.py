"""The battery task package: early prediction of cycle life with FPNN beside the Severson variance model."""
from mis.spec import Command, ModelFamily, ShippedModel, TaskSpec

SPEC = TaskSpec(
    name="battery_life",
    title="Early prediction of battery cycle life with FPNN (first N cycles)",
    panel="Tabular",
    pipeline="mis.pipelines.battery.pipeline:BatteryLifePipeline",
    # The paper has no public code, so there are no upstream weights to import.
    families=(ModelFamily("fpnn", "mis.models.fpnn", "FPNNEnsemble", "FPNNConfig"),),
    models=(
        ShippedModel("battery_fpnn_n100", "battery_fpnn_n100.safetensors",
                     "FPNN ensemble, first 100 cycles, MIT/Severson LFP cells (41 training cells)",
                     quality="primary test RMSE 115 cycles / MAPE 8.8 % on the 43 MIT/Severson test cells",
                     instead="for another cell chemistry train on your cells (`mis train battery`)"),
        ShippedModel("battery_fpnn_n40", "battery_fpnn_n40.safetensors",
                     "FPNN ensemble, first 40 cycles, MIT/Severson LFP cells (41 training cells)",
                     quality="primary test RMSE 119 cycles / MAPE 10.4 % on the 43 MIT/Severson test cells",
                     instead="for another cell chemistry train on your cells (`mis train battery`)"),
    ),
    default_model="battery_fpnn_n100",
    fast_model="battery_fpnn_n40",   # fewer cycles: an earlier, rougher answer
    commands=(
        Command("predict", "mis.cli.battery:predict", group="battery"),
        Command("battery", "mis.cli.battery:train_battery", group="train"),
        Command("battery", "mis.cli.battery:evaluate_battery", group="evaluate"),
    ),
    groups={"battery": "Battery cycle-life prediction from early cycles."},
    input_kinds=("battery",),
    demo="mis.pipelines.battery.demo:demo",
    sample_data="mis.pipelines.battery.synthetic:write_sample_data",
    api={"BatteryLifePipeline": "mis.pipelines.battery.pipeline",
         "LifePrediction": "mis.pipelines.battery.pipeline",
         "read_cells": "mis.io.battery"},
)
