"""The translation engine interface and the choice of engine by name (`--backend`).

Engines live one per module in `lmmdata.backends`: `argos` (an installed Argos
Translate package), `ct2` (any CTranslate2 model directory) and `openai` (an LLM
behind OpenAI-compatible servers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .translate import TranslateConfig

BACKENDS = ("argos", "ct2", "openai")


class Backend(Protocol):
    """What `lmmdata translate` needs from a translation engine."""

    id: str  # engine + model + prompt + decoding identity; part of every cache key
    sentinels: bool  # True: takes whole lines with protected spans as <xN/> sentinels; False: bare pieces

    def translate_batch(self, texts: list[str]) -> list[str | None]:
        """One translation per text, in order; None where the engine cannot take that text."""
        ...


def make_backend(cfg: "TranslateConfig") -> Backend:
    """The engine `cfg.backend` names, configured from `cfg`."""
    from .config import ConfigError

    if cfg.backend == "argos":
        if cfg.model:
            raise ConfigError("--model is for --backend ct2 or openai; argos takes --package or an installed package")
        from .backends.argos import ArgosBackend

        return ArgosBackend(cfg.src, cfg.tgt, cfg.package, cfg.workers, cfg.beam_size, cfg.device, cfg.compute_type)
    if cfg.backend == "ct2":
        if not cfg.model:
            raise ConfigError("--backend ct2 needs --model DIR (a CTranslate2 model directory)")
        from .backends.ct2 import Ct2Backend

        return Ct2Backend(cfg.model, cfg.device, cfg.workers, cfg.beam_size, cfg.target_prefix, cfg.compute_type)
    if cfg.backend == "openai":
        from .backends.openai import OpenAIBackend

        return OpenAIBackend(cfg.base_url, cfg.model or "", cfg.src, cfg.tgt, api_key_env=cfg.api_key_env,
                             concurrency=cfg.concurrency, prompt=cfg.prompt, temperature=cfg.temperature,
                             max_tokens=cfg.max_tokens, retries=cfg.retries, timeout=cfg.timeout)
    raise ConfigError(f"--backend {cfg.backend!r}: choose one of {', '.join(BACKENDS)}")
