"""The vLLM adapter: argument rendering, process supervision and the OpenAI-compatible client.

vLLM needs a GPU and these machines have none, so the process tests launch a STAND-IN for vLLM
(tests/standins/openai_standin.py): a small server written for these tests that speaks vLLM's
HTTP protocol with deterministic answers. It is a real process on a real port, launched with
exactly the `vllm serve` arguments the adapter renders; what it cannot show is vLLM itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelops.errors import NotFoundError, SpecError
from modelops.spec import (
    DatasetRef,
    Framework,
    LLMRuntime,
    ModelVersion,
    RollbackClass,
    RuntimeRequirements,
    Tier,
)
from serving.routing import BackendKind
from serving.triton.server import free_port
from serving.vllm_backend import (
    ContextLengthExceeded,
    VLLMArgs,
    VLLMClient,
    VLLMModelNotFound,
    VLLMProcess,
    VLLMRequestError,
    VLLMState,
    VLLMUnavailable,
)

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "openai_standin.py"
LAUNCH_STANDIN = (sys.executable, str(STANDIN))


def llm_version(
    *,
    max_context_length: int = 4096,
    mem_gb: float = 24.0,
    kv_gb: float = 0.5,
    tokenizer: str = "acme-tokenizers/chat-tok@9f1c2ab",
    draft: str | None = "acme/draft-160m",
) -> ModelVersion:
    return ModelVersion(
        model_id="chat",
        version=3,
        weights_uri="file:///srv/models/chat-v3",
        weights_hash="a" * 64,
        framework=Framework.vllm_engine,
        runtime_requirements=RuntimeRequirements(
            gpu_class="a100-80gb",
            mem_gb=mem_gb,
            llm=LLMRuntime(
                max_context_length=max_context_length,
                kv_cache_gb_per_sequence=kv_gb,
                tokenizer_version=tokenizer,
                draft_model=draft,
            ),
        ),
        training_run_id="t",
        training_data_version=DatasetRef(name="d", version=1),
        eval_set_version=DatasetRef(name="e", version=1),
        rollback_class=RollbackClass.STATELESS,
        tier=Tier.L2,
        created_at=datetime.now(UTC),
    )


def test_args_render_the_llm_runtime_contract_as_vllm_serve_flags() -> None:
    args = VLLMArgs.from_runtime(llm_version(), port=8123, gpu_memory_gb=80, weights_gb=14)
    argv = args.command()
    assert argv[:3] == ["vllm", "serve", "/srv/models/chat-v3"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags == {
        "--served-model-name": "chat__v3",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--max-model-len": "4096",
        "--gpu-memory-utilization": "0.3",  # 24 GB of an 80 GB GPU
        "--max-num-seqs": "20",  # (24 - 14) GB of KV cache / 0.5 GB per full-length sequence
        "--tokenizer": "acme-tokenizers/chat-tok",
        "--tokenizer-revision": "9f1c2ab",
        "--speculative-config": flags["--speculative-config"],
    }
    assert json.loads(flags["--speculative-config"]) == {
        "model": "acme/draft-160m",
        "num_speculative_tokens": 5,
        "method": "draft_model",
    }
    assert args.base_url == "http://127.0.0.1:8123"


def test_args_leave_out_what_the_contract_does_not_state() -> None:
    argv = VLLMArgs.from_runtime(
        llm_version(tokenizer="rev-7", draft=None, mem_gb=30), port=9000, gpu_memory_gb=40
    ).argv()
    assert "--speculative-config" not in argv and "--tokenizer" not in argv
    assert "--max-num-seqs" not in argv  # weights size unknown: vLLM sizes its own batch
    assert argv[argv.index("--tokenizer-revision") + 1] == "rev-7"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.75"


def test_args_refuse_contracts_that_cannot_fit() -> None:
    with pytest.raises(SpecError, match="allows at most"):
        VLLMArgs.from_runtime(llm_version(mem_gb=79), port=1, gpu_memory_gb=80)
    with pytest.raises(SpecError, match="less than one sequence"):
        VLLMArgs.from_runtime(llm_version(mem_gb=24, kv_gb=4), port=1, weights_gb=21)
    dnn = llm_version().model_copy(update={"framework": Framework.onnx})
    with pytest.raises(SpecError, match="not an LLM version"):
        VLLMArgs.from_runtime(dnn, port=1)


@pytest.mark.timeout(90)
def test_stand_in_served_supervised_and_restarted_after_a_kill(tmp_path: Path) -> None:
    """Against the vLLM STAND-IN (vLLM needs a GPU): launch, health, round trips, errors,
    a SIGKILL detected by the supervisor and a restart that serves again."""
    args = VLLMArgs.from_runtime(
        llm_version(max_context_length=32), port=free_port(), model=str(tmp_path / "weights")
    )
    proc = VLLMProcess(
        args,
        launcher=LAUNCH_STANDIN,
        log_path=tmp_path / "standin.log",
        startup_timeout=30,
        poll_interval=0.1,
        backoff_initial=0.1,
    )
    t0 = time.perf_counter()
    proc.start()
    started_s = time.perf_counter() - t0
    try:
        assert proc.status().state is VLLMState.HEALTHY
        ep = proc.endpoint(3)
        assert (ep.backend, ep.url, ep.backend_model) == (
            BackendKind.vllm,
            args.base_url,
            "chat__v3",
        )
        with VLLMClient(args.base_url) as client:
            assert client.health()
            assert client.models() == ["chat__v3"]

            out = client.completions(model="chat__v3", prompt="the quick brown fox", max_tokens=6)
            assert out["object"] == "text_completion"
            assert out["choices"][0]["text"] == "fox brown quick the fox brown"
            assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}

            chat = client.chat(
                {"model": "chat__v3", "messages": [{"role": "user", "content": "hello there"}]},
                max_tokens=2,
            )
            assert chat["choices"][0]["message"] == {"role": "assistant", "content": "there hello"}
            assert chat["usage"]["prompt_tokens"] == 2

            # 30 prompt tokens + 5 requested > --max-model-len 32, as rendered from the contract.
            with pytest.raises(ContextLengthExceeded) as err:
                client.completions(model="chat__v3", prompt="w " * 30, max_tokens=5)
            assert err.value.status == 400 and isinstance(err.value, SpecError)
            assert "maximum context length is 32" in str(err.value)
            with pytest.raises(VLLMModelNotFound):
                client.completions(model="other", prompt="hi")
            with pytest.raises(VLLMRequestError):
                client.chat(model="chat__v3", messages=[])

            first_pid = proc.pid
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                st = proc.status()
                if st.restarts == 1 and st.state is VLLMState.HEALTHY:
                    break
                time.sleep(0.05)
            st = proc.status()
            assert st.state is VLLMState.HEALTHY and st.restarts == 1, st
            assert st.pid != first_pid and st.last_exit_code == -signal.SIGKILL
            again = client.completions(model="chat__v3", prompt="back again", max_tokens=2)
            assert again["choices"][0]["text"] == "again back"
    finally:
        proc.stop()
    assert not proc.alive() and proc.status().state is VLLMState.STOPPED
    with VLLMClient(args.base_url, timeout=2) as client:
        assert not client.health()
        with pytest.raises(VLLMUnavailable):
            client.models()
    print(f"stand-in healthy {started_s:.2f} s after launch")


@pytest.mark.timeout(60)
def test_a_server_that_keeps_crashing_is_given_up_on(tmp_path: Path) -> None:
    """Stand-in launcher that exits at once (vLLM needs a GPU): backoff, then FAILED."""
    args = VLLMArgs.from_runtime(llm_version(), port=free_port(), model="m")
    crash = (sys.executable, "-c", "import sys; sys.exit(3)")
    with pytest.raises(VLLMUnavailable, match="exited with code 3"):
        VLLMProcess(args, launcher=crash, startup_timeout=10).start()

    proc = VLLMProcess(
        args, launcher=crash, poll_interval=0.05, backoff_initial=0.05, max_restarts=3
    )
    proc.start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while proc.status().state is not VLLMState.FAILED and time.monotonic() < deadline:
            time.sleep(0.05)
        st = proc.status()
        assert st.state is VLLMState.FAILED and st.restarts == 3, st
        assert "gave up after 3 restarts" in st.message and st.last_exit_code == 3
        with pytest.raises(VLLMUnavailable, match="failed"):
            proc.wait_healthy(1)
    finally:
        proc.stop()

    with pytest.raises(NotFoundError, match="llm extra"):
        VLLMProcess(args, launcher=("no-such-vllm-binary-here", "serve")).start()


@pytest.mark.timeout(60)
def test_health_needs_the_served_name_in_v1_models(tmp_path: Path) -> None:
    """Against the vLLM STAND-IN (vLLM needs a GPU): /health alone is not enough; a server
    that serves some other name is not healthy for this version."""
    args = VLLMArgs.from_runtime(
        llm_version(), port=free_port(), model="m", extra_args=["--served-model-name", "other"]
    )
    proc = VLLMProcess(args, launcher=LAUNCH_STANDIN, startup_timeout=30)
    proc.start(wait=False, supervise=False)
    try:
        deadline = time.monotonic() + 30
        while not proc.client.health() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.client.health() and proc.client.models() == ["other"]
        assert not proc.healthy()
    finally:
        proc.stop()
