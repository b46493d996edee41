"""Why no CPU backend is both under 45 s and within 0.1 % of the reference on 2 cores: the precision options.

On the full-size network of bench/backends.py (ResEnc-L, 141 M parameters, one 256x256x80 patch, seeded random
weights and input), each option's time per patch and its logits against OpenVINO fp32: mean relative error
and argmax agreement. On the six reference-agreement phantoms with the bundled models, the final labels of the
mixed options against the torch path (bench/agreement.py, as bench/backends.py measures the plain backends).

Options:
``f32`` / ``bf16`` / ``f16``
    The whole network at one ``INFERENCE_PRECISION_HINT`` (f16 runs on AVX512-FP16 where the CPU has it).
``head32``
    bf16, but the last 1x1x1 convolution (the logits) in fp32.
``tail32``
    bf16, but the last decoder stage (full resolution) and the logits in fp32.
``ends32``
    ``tail32`` and the first encoder stage in fp32 as well.
The mixed options split the IR at the last decoder stage's concatenation into separately compiled parts
(OpenVINO 2026.4's CPU plugin ignores per-node precision marks set from Python on convolutions).

    python -m bench.precision_options [--part patch|phantom|both] [--json bench/results/precision_options.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.agreement import agreement

ROOT = Path(__file__).resolve().parent.parent

# option: parts in order, each (inputs, outputs, precision); None = the model's own input / logits
OPTIONS = {
    "f32": [(None, None, "f32")],
    "bf16": [(None, None, "bf16")],
    "f16": [(None, None, "f16")],
    "head32": [(None, ["head_in"], "bf16"), (["head_in"], None, "f32")],
    "tail32": [(None, ["up", "skip0"], "bf16"), (["up", "skip0"], None, "f32")],
    "ends32": [(None, ["skip0"], "f32"), (["skip0"], ["up"], "bf16"), (["up", "skip0"], None, "f32")],
}
MIXED = ("head32", "tail32", "ends32")


def cut_points(model) -> dict:
    """Tensors (producer name, output index) where the parts meet: the last concatenation's two inputs (the
    upsampled decoder features and the first encoder stage's skip) and the logits convolution's input."""
    ops = model.get_ordered_ops()
    concat = [o for o in ops if o.get_type_name() == "Concat"][-1]
    logits = [o for o in ops if o.get_type_name() == "Convolution"][-1]

    def ref(out):
        return out.get_node().get_friendly_name(), out.get_index()
    return {"up": ref(concat.input_value(0)), "skip0": ref(concat.input_value(1)),
            "head_in": ref(logits.input_value(0))}


def _output(model, ref):
    return next(o.output(ref[1]) for o in model.get_ordered_ops() if o.get_friendly_name() == ref[0])


def part(xml: Path, inputs: list | None, outputs: list | None):
    """The sub-model of the IR from ``inputs`` (tensors made parameters) to ``outputs`` (tensors made results)."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    params = list(model.get_parameters())
    if inputs:
        params = []
        for ref in inputs:
            out = _output(model, ref)
            param = ov.opset13.parameter(out.get_partial_shape(), out.get_element_type())
            for target in list(out.get_target_inputs()):
                target.replace_source_output(param.output(0))
            params.append(param)
    results = [ov.opset13.result(_output(model, ref)) for ref in outputs] if outputs else list(model.get_results())
    return ov.Model(results, params)


class Split:
    """A network compiled in parts of their own precision; called like backends.OpenVINONetwork."""

    def __init__(self, xml: Path, option: str, threads: int = 2):
        import openvino as ov
        cuts = cut_points(ov.Core().read_model(xml))
        self.parts = []
        for inputs, outputs, precision in OPTIONS[option]:
            model = part(xml, [cuts[k] for k in inputs] if inputs else None,
                         [cuts[k] for k in outputs] if outputs else None)
            compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "PERFORMANCE_HINT": "LATENCY",
                                                              "INFERENCE_NUM_THREADS": threads})
            self.parts.append((inputs, outputs, compiled.create_infer_request()))

    def run(self, x: np.ndarray) -> np.ndarray:
        tensors = {}
        for inputs, outputs, request in self.parts:
            values = list(request.infer({i: tensors[k] for i, k in enumerate(inputs)} if inputs else {0: x}).values())
            if not outputs:
                return np.array(values[0], copy=True)
            tensors.update({k: np.array(v, copy=True) for k, v in zip(outputs, values)})
        raise AssertionError("the last part must give the logits")


def patch_part(work: Path) -> dict:
    """Time per patch and logits against fp32, full-size network."""
    from bench import backends as B
    from spineseg.inference.backends import _export
    from spineseg.inference.two_step import STEP1_DATASET, LoadedModel, find_model_folder
    models = B.make_full_size_models(ROOT / "models", work)
    model = LoadedModel(find_model_folder(models, STEP1_DATASET, "direct"), backend="torch")
    import openvino as ov
    xml = work / "step1.xml"
    ov.save_model(_export(model.predictor.network, model.patch_size, model.n_inputs, model.trace_shape), xml,
                  compress_to_fp16=False)
    del model
    x = np.random.default_rng(0).standard_normal((1, 1, 256, 256, 80)).astype(np.float32)
    rows, exact = {}, None
    for option in OPTIONS:
        net = Split(xml, option)
        net.run(x)                                   # the first call allocates; time the second
        t0 = time.perf_counter()
        y = net.run(x)
        rows[option] = {"seconds_per_patch": round(time.perf_counter() - t0, 2)}
        del net
        if option == "f32":
            exact = y
        error = float(np.abs(y - exact).mean() / np.abs(exact).mean())
        rows[option].update({"mean_relative_logit_error": round(error, 5),
                             "argmax_agreement_random_weights": round(float((y.argmax(1) == exact.argmax(1)).mean()), 5)})
        print(f"patch {option:7s} {rows[option]}", flush=True)
    return rows


def phantom_part(work: Path) -> dict:
    """Final labels of the mixed options on the phantom cases, against the torch path."""
    import openvino as ov
    import torch

    from bench import reference_agreement as RA
    from spineseg.inference import backends, two_step

    def segment(pair):
        out = {}
        for seed, _, img in RA.case_inputs():
            out[seed] = two_step.segment_volume(np.asanyarray(img.dataobj), two_step.lps_to_ras(img.affine),
                                                pair).labels
        return out

    exact = segment(two_step.load_models(ROOT / "models", "cpu", backend="torch"))
    rows = {}
    plain = backends.OpenVINONetwork
    for option in ("bf16", *MIXED):
        class Network:
            def __init__(self, model, _precision, threads=None, option=option):
                xml = Path(tempfile.mkdtemp(dir=work)) / "model.xml"
                ov.save_model(model, xml, compress_to_fp16=False)
                self.net = Split(xml, option)

            def __call__(self, x):
                return torch.from_numpy(self.net.run(np.ascontiguousarray(x.numpy(), dtype=np.float32)))

            def release_memory(self):
                pass

            to = eval = lambda self, *a, **k: self
            load_state_dict = lambda self, *a, **k: None

        backends.OpenVINONetwork = Network
        two_step._CACHE.clear()
        try:
            labels = segment(two_step.load_models(ROOT / "models", "cpu", backend="openvino-bf16"))
        finally:
            backends.OpenVINONetwork = plain
            two_step._CACHE.clear()
        cases = [{"seed": s, **agreement(labels[s], exact[s])} for s in exact]
        rows[option] = {"minimum_foreground": min(c["agreement_foreground"] for c in cases),
                        "foreground_per_case": [c["agreement_foreground"] for c in cases]}
        print(f"phantom {option:7s} {rows[option]}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["patch", "phantom", "both"], default="both")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    os.environ.setdefault("SPINESEG_OPENVINO_CACHE", tempfile.mkdtemp(prefix="ov-cache-"))
    record = {"cpu": f"{os.cpu_count()} cores", "load_average_at_start": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as tmp:
        if a.part in ("patch", "both"):
            record["full_size_patch"] = patch_part(Path(tmp))
        if a.part in ("phantom", "both"):
            record["phantom_final_labels_vs_torch"] = phantom_part(Path(tmp))
    record["load_average_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(record, indent=1))
    if a.json:
        a.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
