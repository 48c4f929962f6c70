"""Coverage sweep over the models Keras 3 users bring (issue 20): what each technique reaches, per model.

A start: ``keras.applications.MobileNetV3Small`` and keras-hub backbones built from explicit small configs
(``weights=None`` / no preset: nothing is downloaded). For each model, in its own subprocess:

* analyze / rebuild: the rebuilt model's largest output difference on a random batch;
* prune 50 % / cluster 16: the share of kernel weights the technique reaches (``kopt.coverage``), or the error;
* QAT: ``quantize_model`` ok, or the error class;
* int8: ``to_tflite`` of the QAT model (or post-training with random calibration data when QAT failed),
  fully int8 or not, and the Edge TPU check (``kopt.export.check_edgetpu``: mapped / total).

Run: ``python benchmarks/coverage.py [--models ...]``; writes benchmarks/results/coverage.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)


def _hub_mobilenet_v3():
    from keras_hub.models import MobileNetBackbone

    return MobileNetBackbone(  # keras-hub's docstring configuration, 64x64
        stackwise_expansion=[[40, 56], [64, 144, 144], [72, 72], [144, 288, 288]],
        stackwise_num_blocks=[2, 3, 2, 3],
        stackwise_num_filters=[[16, 16], [24, 24, 24], [24, 24], [48, 48, 48]],
        stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
        stackwise_se_ratio=[[None, None], [0.25] * 3, [0.3, 0.3], [0.3, 0.25, 0.25]],
        stackwise_activation=[["relu"] * 2, ["hard_swish"] * 3, ["hard_swish"] * 2, ["hard_swish"] * 3],
        stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
        output_num_filters=288,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=288,
        squeeze_and_excite=0.5,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=16,
        image_shape=(64, 64, 3),
    )


def _hub_resnet():
    from keras_hub.models import ResNetBackbone

    return ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64, 128],  # keras-hub requires 64 first
        stackwise_num_blocks=[2, 2, 2],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(64, 64, 3),
    )


def _hub_vit():
    from keras_hub.models import ViTBackbone

    return ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )


def _hub_deit():
    from keras_hub.models import DeiTBackbone

    return DeiTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                        intermediate_dim=64)


def _hub_mit():
    from keras_hub.models import MiTBackbone

    return MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[16, 32],
        image_shape=(32, 32, 3),
    )


def _hub(name, **config):
    def build():
        import keras_hub

        return getattr(keras_hub.models, name)(**config)

    return build


def _hub_deeplab():
    from keras_hub.models import DeepLabV3Backbone

    encoder = _hub_resnet_small()
    # The pyramid level doubles per key (P2 16x16, P3 8x8 at 64x64): upsampling the P3 features by 2 meets P2,
    # which the decoder concatenates with them; the head then upsamples by 2**3 // 2 back to the image size.
    return DeepLabV3Backbone(image_encoder=encoder, spatial_pyramid_pooling_key="P3", upsampling_size=2,
                             dilation_rates=[2, 4], low_level_feature_key="P2", image_shape=(64, 64, 3))


def _hub_segformer():
    from keras_hub.models import SegFormerBackbone

    return SegFormerBackbone(image_encoder=_hub_mit(), projection_filters=32)


def _hub_resnet_small():
    from keras_hub.models import ResNetBackbone

    return ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32, 32],
                          stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
                          image_shape=(64, 64, 3))


def _application(name, size=32):
    def build():
        import keras

        return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)

    return build


HUB = {
    "keras-hub ResNet (pre-activation bottleneck)": _hub(
        "ResNetBackbone", input_conv_filters=[16], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="bottleneck_block",
        use_pre_activation=True, image_shape=(32, 32, 3)),
    "keras-hub DenseNet": _hub("DenseNetBackbone", stackwise_num_repeats=[2, 2], growth_rate=8, image_shape=(32, 32, 3)),
    "keras-hub VGG": _hub("VGGBackbone", stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16],
                          image_shape=(32, 32, 3)),
    "keras-hub Xception": _hub("XceptionBackbone", stackwise_conv_filters=[[16, 32], [32, 32]],
                               stackwise_pooling=[False, True], image_shape=(32, 32, 3)),
    "keras-hub CSPNet (detector backbone)": _hub(
        "CSPNetBackbone", stem_filters=16, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
        stackwise_strides=[2, 2], stackwise_num_filters=[16, 32], block_type="bottleneck_block",
        # CSP-ResNet's ratios (timm's cspresnet50): the cross stage expands to 2x filters and splits them in
        # half, so the bottleneck's residual add sees equal channels; ratios of 1.0 leave them mismatched.
        stage_type="csp", expand_ratio=2.0, bottle_ratio=0.5, block_ratio=1.0, cross_linear=True,
        image_shape=(32, 32, 3)),
    "keras-hub Swin Transformer": _hub("SwinTransformerBackbone", image_shape=(32, 32, 3), embed_dim=16,
                                       depths=[2, 1], num_heads=[1, 2], window_size=4, patch_size=4),
    "keras-hub DeepLabV3 (segmenter)": _hub_deeplab,
    "keras-hub SegFormer (segmenter)": _hub_segformer,
}

APPLICATIONS = {
    f"keras.applications {name}": _application(name, size)
    for name, size in [
        ("MobileNetV3Small", 64), ("MobileNetV3Large", 64), ("MobileNet", 32), ("MobileNetV2", 32),
        ("ResNet50", 32), ("ResNet50V2", 32), ("DenseNet121", 32), ("EfficientNetB0", 32), ("EfficientNetV2B0", 32),
        ("VGG16", 32), ("Xception", 71), ("InceptionV3", 75), ("InceptionResNetV2", 75), ("NASNetMobile", 32),
        ("ConvNeXtTiny", 32),  # no RegNet: Keras 3 (3.15) does not ship keras.applications' RegNet models
    ]
}

MODELS = {
    "keras-hub MobileNet (V3 blocks)": _hub_mobilenet_v3,
    "keras-hub ResNet (basic blocks)": _hub_resnet,
    "keras-hub ViT": _hub_vit,
    "keras-hub DeiT": _hub_deit,
    "keras-hub MiT (SegFormer encoder)": _hub_mit,
    **HUB,
    **APPLICATIONS,
}


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"


def measure(name: str) -> dict:
    import keras
    import numpy as np

    import kopt
    from kopt.export import check_edgetpu, load_tflite, to_tflite
    from kopt.technique.coverage import CoverageWarning

    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    row: dict = {"model": name, "params": int(model.count_params())}
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, (8, *shape)).astype("float32")

    try:
        rebuilt = kopt.graph.analyze(model).rebuild(clone=True)
        pairs = zip(keras.tree.flatten(model(x, training=False)), keras.tree.flatten(rebuilt(x, training=False)))
        row["rebuild_max_diff"] = float(max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in pairs))
    except Exception as error:  # noqa: BLE001 - tabulated
        row["rebuild_max_diff"] = _error(error)

    def reach(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                call()
            except Exception as error:  # noqa: BLE001 - tabulated
                return _error(error)
        coverage_lines = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, CoverageWarning)]
        return coverage_lines[0].replace("Coverage: ", "") if coverage_lines else "all kernels reached"

    row["prune_50"] = reach(lambda: kopt.sparsity.prune_low_magnitude(model))
    row["cluster_16"] = reach(lambda: kopt.clustering.cluster_weights(model, 16))
    qat = None
    try:
        qat = kopt.quantization.quantize_model(model)
        row["qat"] = "ok"
    except Exception as error:  # noqa: BLE001 - tabulated
        row["qat"] = _error(error)
    try:
        tflite = to_tflite(qat) if qat is not None else to_tflite(model, representative_data=x)
        row["int8"] = ("QAT" if qat is not None else "PTQ") + " fully int8"
        graph = load_tflite(tflite).main
        report = check_edgetpu(tflite)
        row["edgetpu"] = f"{report.num_mapped}/{len(graph.operators)}"
        row["edgetpu_cpu"] = sorted({verdict.op for verdict in report.unmapped})
    except Exception as error:  # noqa: BLE001 - tabulated
        row["int8"] = _error(error)
    return row


def _short(value: object) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)[:100]


def table(rows: list[dict]) -> str:
    lines = [
        "| model | params | rebuild max diff | prune 50 % | cluster 16 | QAT | int8 | Edge TPU mapped (CPU ops) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error'][:100]} | | | | | | |")
            continue
        cpu = ", ".join(r.get("edgetpu_cpu", [])) or "none"
        lines.append(
            f"| {r['model']} | {r['params']} | {_short(r['rebuild_max_diff'])} | {r['prune_50']} | {r['cluster_16']} | "
            f"{r['qat']} | {r['int8']} | {r.get('edgetpu', '')} ({cpu}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child)))
        return
    rows = []
    for name in args.models:
        command = [sys.executable, os.path.abspath(__file__), "--child", name]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rows.append({"model": name, "error": f"not measured: over the {args.timeout:.0f} s budget of this run"})
        else:
            found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            error = (proc.stderr.strip() or "?").splitlines()[-1][-200:]
            rows.append(json.loads(found[-1][7:]) if found else {"model": name, "error": error})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        write(rows)  # after every model: an interrupted run keeps what it measured
    print(table(rows))


def write(rows: list[dict]) -> None:
    """Write the results; a ``--models`` subset replaces its own rows and keeps the earlier runs' others.

    The sweep takes hours on a shared machine, so it is rerun per model: overwriting the file with the
    subset would drop the rows measured before (the README table must stay the whole table).
    """
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "coverage.json")
    earlier = {}
    if os.path.exists(path):
        with open(path) as handle:
            earlier = {row["model"]: row for row in json.load(handle) if row["model"] in MODELS}
    earlier.update({row["model"]: row for row in rows})
    rows = [earlier[name] for name in MODELS if name in earlier]
    with open(os.path.join(RESULTS, "coverage.json"), "w") as handle:
        json.dump(rows, handle, indent=2)
    with open(os.path.join(RESULTS, "coverage.md"), "w") as handle:
        handle.write(table(rows) + "\n")


if __name__ == "__main__":
    main()
