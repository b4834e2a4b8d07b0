"""Methods compared in the tables, derived from the loss and selector registries.

A :class:`Method` is a policy-training recipe: a registered loss (:data:`sepo.losses.LOSSES`), its
hyper-parameters, and, for a loss that trains on offline token selections, a registered selector
(:data:`sepo.selectors.SELECTORS`) with its own. What a method needs (a reference model, an
oracle's token scores) is read from its loss's registry entry, never from its name.

The methods are not listed by hand: every registered loss is a method named by its label ("DPO",
"SePO"), and every loss that needs a selection is also a method per registered selector other than
``topk`` ("SePO-random", "SePO-adaptive", ...). Registering a loss or a selector thus adds a method
to every table that names it. Hyper-parameters are the loss's and the selector's own defaults unless
an experiment sets others (``ExperimentConfig.method_settings``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sepo.errors import ConfigError
from sepo.losses import LOSSES, LossSpec, get_loss
from sepo.selectors import SELECTORS, get_selector

DEFAULT_SELECTOR = "topk"


@dataclasses.dataclass(frozen=True)
class Method:
    """A policy-training recipe: a registry loss, its hyper-parameters and, where the loss needs one,
    the offline selector with its hyper-parameters (both mappings hold only what differs from the
    registry defaults)."""

    name: str
    loss: str
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    selector: str = DEFAULT_SELECTOR
    selection_kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_loss(self.loss)
        unknown = sorted(set(self.loss_kwargs) - set(spec.hyperparameters))
        if unknown:
            raise ConfigError(f"method {self.name!r}: loss {self.loss!r} takes {sorted(spec.hyperparameters)}, not {unknown}")
        if spec.needs_selection:
            try:
                get_selector(self.selector).check(self.selection_kwargs)
            except ConfigError as err:
                raise ConfigError(f"method {self.name!r}: {err}") from None
        elif self.selection_kwargs or self.selector != DEFAULT_SELECTOR:
            raise ConfigError(f"method {self.name!r}: loss {self.loss!r} selects no tokens offline; "
                              "it takes no selector or selection_kwargs")

    @property
    def spec(self) -> LossSpec:
        return get_loss(self.loss)

    @property
    def needs_reference(self) -> bool:
        return self.spec.needs_reference

    @property
    def needs_selection(self) -> bool:
        return self.spec.needs_selection

    def hyperparameters(self) -> dict[str, Any]:
        """Every hyper-parameter the run uses, defaults included (for tables)."""
        out = {**self.spec.hyperparameters, **self.loss_kwargs}
        if self.needs_selection:
            out.update({"selector": self.selector, **get_selector(self.selector).hyperparameters, **self.selection_kwargs})
        return out

    def replace(self, **changes: Any) -> "Method":
        return dataclasses.replace(self, **changes)

    def with_loss_kwargs(self, **values: Any) -> "Method":
        return self.replace(loss_kwargs={**self.loss_kwargs, **values})

    def with_selection_kwargs(self, **values: Any) -> "Method":
        return self.replace(selection_kwargs={**self.selection_kwargs, **values})


def registered_methods() -> dict[str, Method]:
    """Every method the registries define, by name (computed on each call, so later registrations count)."""
    out: dict[str, Method] = {}
    for spec in LOSSES.values():
        out[spec.label] = Method(spec.label, spec.name)
        if spec.needs_selection:
            for selector in SELECTORS:
                if selector != DEFAULT_SELECTOR:
                    out[f"{spec.label}-{selector}"] = Method(f"{spec.label}-{selector}", spec.name, selector=selector)
    return out


def method(name: str, settings: dict | None = None) -> Method:
    """The method called ``name``, with an experiment's ``settings`` for it applied
    (``{"loss_kwargs": {...}, "selection_kwargs": {...}}``)."""
    known = registered_methods()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(f"unknown method {name!r}; known: {sorted(known)}")
    recipe = known[name]
    settings = settings or {}
    unknown = sorted(set(settings) - {"loss_kwargs", "selection_kwargs"})
    if unknown:
        raise ConfigError(f"method_settings[{name!r}]: unknown key(s) {unknown}; use loss_kwargs and selection_kwargs")
    return recipe.replace(loss_kwargs={**recipe.loss_kwargs, **settings.get("loss_kwargs", {})},
                          selection_kwargs={**recipe.selection_kwargs, **settings.get("selection_kwargs", {})})
