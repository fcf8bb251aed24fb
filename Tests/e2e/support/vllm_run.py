"""Starts vLLM on a model once and generates (run with the vLLM venv's Python). VLLM_CACHE_ROOT comes from the
environment. Prints one JSON line: the generated token ids, the C++ kernels Inductor compiled into the cache root
(each call of its C++ builder is one compiler run; the ISA probes it builds under $TMPDIR are not kernels of the
model and are listed apart), and the engine start time.

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so the counters see its compilations.
Usage: vllm_run.py MODEL_DIR"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

builds: list[str] = []


def count_cpp_builds() -> None:
    from torch._inductor import cpp_builder

    build = cpp_builder.CppBuilder.build

    def counting(self, *a, **kw):
        builds.append(os.path.realpath(self.get_target_file_path()))
        return build(self, *a, **kw)

    cpp_builder.CppBuilder.build = counting


def main(model: str) -> None:
    count_cpp_builds()
    from vllm import LLM, SamplingParams

    start = time.monotonic()
    llm = LLM(model=model, dtype="float32", max_model_len=128, max_num_seqs=4, max_num_batched_tokens=128,
              seed=0)
    started = time.monotonic() - start
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    outputs = llm.generate(["the kernel cache is", "a warm start loads"], params, use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    root = os.path.realpath(os.environ["VLLM_CACHE_ROOT"]) + "/"
    kernels = [b for b in builds if b.startswith(root)]
    others = [b for b in builds if not b.startswith(root)]
    print(json.dumps({"tokens": tokens, "cpp_compiled": len(kernels), "kernels": kernels, "other_builds": others,
                      "start_s": round(started, 2)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
