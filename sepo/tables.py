"""The tables of the notebooks: cached runs of a :class:`~sepo.pipeline.Pipeline` composed into frames.

Each table function runs (or reads from the cache) what its table needs, returns a ``pandas.DataFrame``
with one row per run and seed, and the claim records that :mod:`sepo.claims`' verdict rules derive
from it. Policy rows also carry diagnostics of the policy on held-out pairs (:mod:`sepo.diagnostics`: mean
log-prob of chosen and rejected responses, log-prob of EOS where they end, and each one's change from
the SFT model). Every row names the runs it comes from (``run``: the policy's run directory relative to the
project, whose last part is the run's cache key ``run_key``; ``eval_run``: its evaluation's;
``oracle_run``: the oracle whose scores it used), so a number in a table can be traced to the
``config.yaml`` and ``metrics.json`` that made it.

The loops over runs go through :func:`sepo.cache.share_work`: notebooks that run side by side on one
cache split the runs they both need instead of waiting for each other; rows come out in loop order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepo import claims as claim_rules
from sepo.cache import share_work
from sepo.methods import Method
from sepo.pipeline import Pipeline, relative, resolve


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def _run(run_dir: str | Path) -> dict[str, str]:
    return {"run": relative(run_dir), "run_key": Path(run_dir).name}


def train_and_evaluate(pipe: Pipeline, recipe: Method, seed: int, *, oracle_dir=None, size: str | None = None,
                       world: str = "id", data: str | None = None, reference_path: str | None = None,
                       lr: float | None = None, split: str = "test") -> dict:
    """One policy run and its evaluation on the ``split`` prompts, as a table row. A method that trains on
    token selections reads ``oracle_dir``'s scores; the others train on ``data`` (default: the world's pairs).
    ``lr``: the policy's learning rate (default ``policy_lr``); the row records it. Held-out diagnostics are
    measured for test rows (a search's validation rows choose by win rate and cut-off share). Every run keeps the
    experiment's snapshots, so a run two tables share (the main table's SePO at a seed, and the ablation's
    k = 0.3) is one run, and any run can be drawn on a reward-vs-KL frontier."""
    run_dir, train_metrics = pipe.policy(recipe, seed, size=size, data=oracle_dir if recipe.needs_selection else data,
                                         world=world, reference_path=reference_path, lr=lr, snapshots=True)
    row = {"method": recipe.name, "seed": seed, "lr": pipe.config.policy_lr if lr is None else lr,
           "setting": setting_label(pipe, recipe), **pipe.evaluate(run_dir, seed, size=size, world=world, split=split),
           **(pipe.diagnose(run_dir, size=size) if split == "test" else {})}  # a search run's own test row has them
    row["train_loss"] = train_metrics.get("train/loss", float("nan"))
    row.update(_run(run_dir))
    if recipe.needs_selection and oracle_dir is not None:
        row["oracle_run"] = relative(oracle_dir)
    return row


def summary(frame, by: str | list[str] = "method", columns=("win_rate", "reward", "kl")):
    """Mean and 95% t-interval half-width over seeds of each column, per group (NaN half-width for one seed)."""
    from sepo import stats

    rows = []
    for key, group in frame.groupby(by, sort=False, dropna=False):  # keep rows whose key is NaN (e.g. DPO in 08)
        row = dict(zip([by] if isinstance(by, str) else by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(group)
        for column in columns:
            mean, low, high = stats.t_interval(group[column].tolist())
            row[column] = mean
            row[f"{column}_ci95"] = (high - low) / 2 if len(group) > 1 else float("nan")
        rows.append(row)
    return _frame(rows)


# --------------------------------------------------------------------------------------------
# Oracle and token rewards (notebooks 02, 03)
# --------------------------------------------------------------------------------------------
def oracle_fraction_sweep(pipe: Pipeline, fractions: list[float], k: float = 0.3, train_policies: bool = True):
    """Oracle quality against the share of the oracle split it trains on (C6)."""
    from sepo.analysis import token_agreement
    from sepo.oracle import load_scored

    lr, sepo = chosen_setting(pipe, pipe.method("SePO")) if train_policies else (None, pipe.method("SePO"))

    def row_of(seed: int, fraction: float) -> dict:
        oracle_dir, metrics = pipe.oracle(seed, fraction=fraction)
            # agreement with gold credit needs a world that has one (the paper tier has none: NaN)
        agreement = (token_agreement(load_scored(str(oracle_dir)), k=k, seed=seed) if pipe.world.judge is not None
                     else dict.fromkeys(("chosen/gold_mass", "chosen/precision", "rejected/precision",
                                         "chosen/random_precision", "chosen/spearman"), float("nan")))
        row = {"fraction": fraction, "seed": seed, "oracle_pairs": metrics.get("data/oracle_pairs"),
               "pair_accuracy": metrics.get("eval/rewards/accuracies", float("nan")),
               "target_pair_accuracy": metrics.get("scores/pair_accuracy", float("nan")),
               "chosen_gold_mass": agreement["chosen/gold_mass"], "chosen_precision": agreement["chosen/precision"],
               "rejected_precision": agreement["rejected/precision"], "random_precision": agreement["chosen/random_precision"],
               "spearman": agreement["chosen/spearman"], "oracle_run": relative(oracle_dir)}
        if train_policies:
            policy = train_and_evaluate(pipe, sepo, seed, oracle_dir=oracle_dir, lr=lr)
            row.update({f"policy_{k_}": v for k_, v in policy.items() if k_ in ("win_rate", "reward", "kl", "run")})
        return row

    frame = _frame(share_work([lambda s=seed, f=fraction: row_of(s, f) for seed in pipe.config.seeds for fraction in fractions]))
    return frame, claim_rules.oracle_fraction_claims(frame)


def oracle_curve(pipe: Pipeline, fractions: list[float], sizes: list[str]):
    """How good an oracle gets in this world: held-out and target pair accuracy against the pairs it trained on
    (``fractions`` of the oracle split) and its size, for the first seed (the world card's targets as lines)."""
    seed = pipe.config.seeds[0]

    def row_of(size: str, fraction: float) -> dict:
        oracle_dir, metrics = pipe.oracle(seed, size=size, fraction=fraction)
        return {"size": size, "fraction": fraction, "seed": seed, "oracle_pairs": metrics.get("data/oracle_pairs"),
                "heldout_accuracy": metrics.get("eval/rewards/accuracies", float("nan")),
                "target_pair_accuracy": metrics.get("scores/pair_accuracy", float("nan")),
                "train_accuracy": metrics.get("train/rewards/accuracies", float("nan")),
                "oracle_run": relative(oracle_dir)}

    return _frame(share_work([lambda z=size, f=fraction: row_of(z, f) for size in sizes for fraction in fractions]))


def token_reward_report(pipe: Pipeline, k: float = 0.3):
    """Concentration of token rewards (C1) and their agreement with gold credit (R1), per seed."""
    import numpy as np

    from sepo.analysis import concentration, token_agreement
    from sepo.oracle import load_scored

    rows = []
    for seed in pipe.config.seeds:
        oracle_dir, _ = pipe.oracle(seed)
        scored = load_scored(str(oracle_dir))
        row = {"seed": seed, **token_agreement(scored, k=k, seed=seed)}
        # the null of "dominated by a few tokens": Gaussian noise in responses of the same lengths
        # (for long responses the top 30% of |noise| hold 0.584 of it)
        rng = np.random.default_rng(seed)
        for side in ("chosen", "rejected"):
            noise = [rng.standard_normal(len(v)) for v in scored[f"{side}_scores"]]
            row[f"{side}/gaussian_top30"] = concentration(noise)["top30"]
        row["oracle_run"] = relative(oracle_dir)
        rows.append(row)
    frame = _frame(rows)
    return frame, claim_rules.token_reward_claims(frame)


# --------------------------------------------------------------------------------------------
# Policies (notebooks 04-10)
# --------------------------------------------------------------------------------------------
def _best(group, max_cutoff_share: float, tie_order: list[str]):
    """The row of ``group`` a search chooses: among rows whose validation samples are cut off at most
    ``max_cutoff_share`` of the time, the highest gold win rate (ties in ``tie_order``); the first row in
    ``tie_order`` when none is eligible."""
    eligible = group[group.cutoff_share <= max_cutoff_share]
    if not len(eligible):
        return group.sort_values(tie_order).iloc[0]
    return eligible.sort_values(["win_rate", *tie_order], ascending=[False] + [True] * len(tie_order)).iloc[0]


def learning_rate_search(pipe: Pipeline, recipes, oracle_dir, seed: int):
    """Per method, every learning rate of ``policy_lr_grid`` trained with ``seed`` and judged on the validation
    prompts (never the test prompts; a sample cut off at the length limit loses its comparison there, see
    :class:`sepo.evaluate.EvalConfig`). A rate is eligible when at most ``max_cutoff_share`` of its validation
    samples were cut off (an optional threshold; 1 by default); the chosen rate is the eligible one with the
    highest gold win rate (ties: the smaller rate), or the smallest rate when none is eligible. Returns the search frame (with ``eligible`` and ``chosen``) and
    ``{method: chosen rate}`` (``policy_lr`` for every method when the grid is empty)."""
    grid = pipe.config.policy_lr_grid
    if not grid:
        return _frame([]), {r.name: pipe.config.policy_lr for r in recipes}
    rows = share_work([lambda r=recipe, lr=lr: train_and_evaluate(pipe, r, seed, oracle_dir=oracle_dir, lr=lr, split="validation")
                       for recipe in recipes for lr in grid])
    frame = _frame(rows)
    frame["eligible"] = frame.cutoff_share <= pipe.config.max_cutoff_share
    chosen = {name: float(_best(group, pipe.config.max_cutoff_share, ["lr"]).lr)
              for name, group in frame.groupby("method", sort=False)}
    frame["chosen"] = [chosen[m] == lr for m, lr in zip(frame.method, frame.lr)]
    return frame, chosen


def searched_knobs(pipe: Pipeline, recipe: Method) -> dict[str, list[float]]:
    """The hyper-parameters of ``recipe``'s loss that the search's second stage tries (``policy_knob_grid``)."""
    return {name: list(values) for name, values in pipe.config.policy_knob_grid.get(recipe.loss, {}).items()}


def setting_label(pipe: Pipeline, recipe: Method) -> str:
    """The searched hyper-parameters of a recipe as the tables show them, e.g. ``beta=0.1`` ('' if none)."""
    values = recipe.hyperparameters()
    return ", ".join(f"{name}={values[name]:g}" for name in searched_knobs(pipe, recipe))


def hyperparameter_search(pipe: Pipeline, recipes, oracle_dir, seed: int):
    """The main table's search, the same for every method, on the validation prompts with ``seed``.

    Stage 1 (:func:`learning_rate_search`): every rate of ``policy_lr_grid`` at the method's own setting.
    Stage 2: at the chosen rate, every value of its loss's beta or gamma in ``policy_knob_grid`` (the method's
    own value is stage 1's run). The chosen setting is the eligible run with the highest validation win rate
    over both stages' runs at that rate (ties: the method's own value, then the smaller one). Returns the
    search frame (``stage``, ``setting``, ``eligible``, ``chosen``: one chosen row per method) and
    ``{method: (rate, recipe with the chosen values)}``."""
    frame, rates = learning_rate_search(pipe, recipes, oracle_dir, seed)
    by_name = {recipe.name: recipe for recipe in recipes}
    if not len(frame):
        return frame, {name: (rates[name], recipe) for name, recipe in by_name.items()}
    frame["stage"] = 1
    frame["setting"] = [setting_label(pipe, by_name[m]) for m in frame.method]
    frame["own"] = True
    variants = [(recipe, recipe.with_loss_kwargs(**{knob: value}))
                for recipe in recipes for knob, values in searched_knobs(pipe, recipe).items()
                for value in values if value != recipe.hyperparameters()[knob]]
    second = share_work([lambda r=recipe, v=variant: {**train_and_evaluate(pipe, v, seed, oracle_dir=oracle_dir,
                                                                           lr=rates[r.name], split="validation"),
                                                      "method": r.name, "setting": setting_label(pipe, v)}
                         for recipe, variant in variants])
    if second:
        import pandas as pd

        extra = _frame(second)
        extra["stage"], extra["own"] = 2, False
        extra["eligible"] = extra.cutoff_share <= pipe.config.max_cutoff_share
        frame = pd.concat([frame, extra], ignore_index=True)
    chosen, chosen_rows = {}, set()
    for name, group in frame.groupby("method", sort=False):
        at_rate = group[group.lr == rates[name]].assign(not_own=lambda g: ~g.own)
        row = _best(at_rate, pipe.config.max_cutoff_share, ["not_own", "setting"])
        chosen_rows.add(row.name)
        recipe = by_name[name]
        if not row.own:
            recipe = next(v for r, v in variants if r.name == name and setting_label(pipe, v) == row.setting)
        chosen[name] = (rates[name], recipe)
    frame["chosen"] = [i in chosen_rows for i in frame.index]
    return frame.drop(columns=["own"]), chosen


def chosen_setting(pipe: Pipeline, recipe: Method) -> tuple[float, Method]:
    """The learning rate and the recipe (with its chosen beta or gamma) that the main table's search chooses
    for ``recipe`` (its runs are shared through the cache): every notebook trains a method at its own chosen
    setting. Variants of a method (another k, oracle or policy size) take the setting chosen for the method."""
    seed = pipe.config.seeds[0]
    oracle_dir = pipe.oracle(seed)[0] if recipe.needs_selection else None
    return hyperparameter_search(pipe, [recipe], oracle_dir, seed)[1][recipe.name]


def chosen_learning_rate(pipe: Pipeline, recipe: Method) -> float:
    """The learning rate of :func:`chosen_setting`."""
    return chosen_setting(pipe, recipe)[0]


def main_table(pipe: Pipeline, methods: list[str], frontier_methods: tuple[str, ...] = ()):
    """Every method from the same SFT model, per seed (C2, R5). Methods that train on token selections
    use the seed's oracle. With a ``policy_lr_grid`` each method first gets the same search of its learning
    rate and then its beta or gamma (:func:`hyperparameter_search`, on the first seed, judged on the validation
    prompts) and every seed then trains at its chosen setting.
    The test runs of ``frontier_methods`` are also the reward-vs-KL frontier (their snapshots, R2).
    Returns the table, the claims, the search (empty without a grid) and the frontier points."""
    import pandas as pd

    recipes = [pipe.method(name) for name in methods]  # an unknown method fails before any training
    unknown = sorted(set(frontier_methods) - set(methods))
    if unknown:
        from sepo.errors import ConfigError

        raise ConfigError(f"frontier_methods {unknown}: not in methods {methods}")
    sft_path = pipe.sft_path(pipe.config.policy_size)
    search, chosen = hyperparameter_search(pipe, recipes, pipe.oracle(pipe.config.seeds[0])[0], pipe.config.seeds[0])

    def sft_row(seed: int) -> dict:
        sft = {**pipe.evaluate(sft_path, seed), **pipe.diagnose(sft_path)}
        return {"method": "SFT", "seed": seed, **sft, "train_loss": float("nan"), "run": relative(sft_path), "run_key": "-"}

    def method_row(seed: int, recipe: Method):
        lr, tuned = chosen[recipe.name]
        row = train_and_evaluate(pipe, tuned, seed, oracle_dir=pipe.oracle(seed)[0], lr=lr)
        curve = None
        if recipe.name in frontier_methods:
            curve = pipe.frontier(resolve(row["run"]), recipe.name, seed)
            curve["run"] = row["run"]
        return row, curve

    calls = []
    for seed in pipe.config.seeds:
        calls.append(lambda s=seed: (sft_row(s), None))
        calls += [lambda s=seed, r=recipe: method_row(s, r) for recipe in recipes]
    done = share_work(calls)
    rows, curves = [row for row, _ in done], [curve for _, curve in done if curve is not None]
    frame = _frame(rows)
    curves = pd.concat(curves, ignore_index=True) if curves else _frame([])
    found = {**claim_rules.main_table_claims(frame), **(claim_rules.frontier_claims(curves) if len(curves) else {})}
    return frame, found, search, curves


def ablations(pipe: Pipeline, ks: list[float], k_ls: list[float], gammas: list[float], oracle_betas: list[float],
              masses: list[float]):
    """SePO against k (k_w = k_l), k_l alone (k_w = 0.3), gamma, the oracle's beta, and adaptive
    selection by reward mass (C3, R4)."""
    lr, sepo = chosen_setting(pipe, pipe.method("SePO"))  # every variant starts from SePO's chosen setting
    variants = [("k", k, sepo.replace(name=f"SePO k={k}").with_selection_kwargs(k_w=k, k_l=k)) for k in ks]
    variants += [("k_l", k, sepo.replace(name=f"SePO k_l={k}").with_selection_kwargs(k_l=k)) for k in k_ls]
    variants += [("gamma", g, sepo.replace(name=f"SePO gamma={g}").with_loss_kwargs(gamma=g)) for g in gammas]
    variants += [("oracle_beta", b, sepo.replace(name=f"SePO oracle beta={b}")) for b in oracle_betas]
    variants += [("adaptive_mass", m, sepo.replace(name=f"SePO adaptive mass={m}", selector="adaptive", selection_kwargs={"mass": m}))
                 for m in masses]

    def row_of(seed: int, parameter: str, value: float, recipe: Method) -> dict:
        oracle_dir, _ = pipe.oracle(seed, beta=value if parameter == "oracle_beta" else None)
        return {"parameter": parameter, "value": value, **train_and_evaluate(pipe, recipe, seed, oracle_dir=oracle_dir, lr=lr)}

    frame = _frame(share_work([lambda s=seed, v=variant: row_of(s, *v) for seed in pipe.config.seeds for variant in variants]))
    return frame, claim_rules.ablation_claims(frame)


def weak_to_strong(pipe: Pipeline, oracle_sizes: list[str], policy_sizes: list[str]):
    """Every oracle size x policy size, one tokenizer (C4), and each policy size's DPO baseline."""
    (sepo_lr, sepo), (dpo_lr, dpo) = chosen_setting(pipe, pipe.method("SePO")), chosen_setting(pipe, pipe.method("DPO"))
    lr = {"SePO": sepo_lr, "DPO": dpo_lr}  # chosen at policy_size

    def sepo_row(seed: int, o: str, p: str) -> dict:
        row = train_and_evaluate(pipe, sepo, seed, oracle_dir=pipe.oracle(seed, size=o)[0], size=p, lr=lr["SePO"])
        return {"oracle_size": o, "policy_size": p, **row}

    def dpo_row(seed: int, p: str) -> dict:
        return {"oracle_size": "-", "policy_size": p, **train_and_evaluate(pipe, dpo, seed, size=p, lr=lr["DPO"])}

    calls = []
    for seed in pipe.config.seeds:
        calls += [lambda s=seed, o=o, p=p: sepo_row(s, o, p) for o in oracle_sizes for p in policy_sizes]
        calls += [lambda s=seed, p=p: dpo_row(s, p) for p in policy_sizes]
    frame = _frame(share_work(calls))
    return frame, claim_rules.weak_to_strong_claims(frame, oracle_sizes, policy_sizes)


def ood_and_overoptimization(pipe: Pipeline, methods: list[str], frontier_epochs: float, save_steps: int):
    """Train on out-of-distribution pairs, with the oracle from the in-distribution world (C5);
    reward-vs-KL frontiers over checkpoints, per method (R2). Evaluation is on in-distribution prompts."""
    import pandas as pd

    recipes = {name: pipe.method(name) for name in methods}  # an unknown method fails before any training
    settings = {name: chosen_setting(pipe, recipe) for name, recipe in recipes.items()}  # chosen in distribution
    lr = {name: rate for name, (rate, _) in settings.items()}
    recipes = {name: recipe for name, (_, recipe) in settings.items()}
    data = pipe.mixed_data_path("id", "ood")

    def row_of(seed: int, name: str, recipe: Method):
        oracle_dir = pipe.oracle(seed, data_path=data)[0] if recipe.needs_selection else None  # in-distribution oracle
        run_dir, _ = pipe.policy(recipe, seed, data=oracle_dir if recipe.needs_selection else data,
                                 save_steps=save_steps, epochs=frontier_epochs, lr=lr[name])
        row = {"method": name, "seed": seed, "lr": lr[name], "setting": setting_label(pipe, recipe),
               **pipe.evaluate(run_dir, seed), **pipe.diagnose(run_dir),
               **_run(run_dir)}
        curve = pipe.frontier(run_dir, name, seed)
        curve["run"] = relative(run_dir)
        return row, curve

    done = share_work([lambda s=seed, n=name, r=recipe: row_of(s, n, r)
                       for seed in pipe.config.seeds for name, recipe in recipes.items()])
    frame, curves = _frame([row for row, _ in done]), pd.concat([curve for _, curve in done], ignore_index=True)
    return frame, curves, claim_rules.ood_claims(frame, curves)


def selective_dpo_references(pipe: Pipeline, strong_size: str, ks: list[float]):
    """Selective-DPO with a weak reference (the policy's own SFT model) and a strong one (a DPO-trained
    larger model), keeping several fractions ``k`` of tokens (the paper keeps the top 40%)."""
    (dpo_lr, dpo), (sdpo_lr, sdpo) = chosen_setting(pipe, pipe.method("DPO")), chosen_setting(pipe, pipe.method("Selective-DPO"))
    lr = {"DPO": dpo_lr, "Selective-DPO": sdpo_lr}

    def references(seed: int) -> dict[str, str]:
        strong_dir, _ = pipe.policy(dpo, seed, size=strong_size, lr=lr["DPO"], snapshots=True)  # 06's DPO run of this size
        return {"weak (policy SFT)": pipe.sft_path(pipe.config.policy_size), f"strong (DPO {strong_size})": str(strong_dir / "model")}

    def sdpo_row(seed: int, ref_name: str, k: float) -> dict:
        ref_path = references(seed)[ref_name]
        recipe = sdpo.replace(name=f"Selective-DPO k={k}").with_loss_kwargs(k=k)
        row = train_and_evaluate(pipe, recipe, seed, reference_path=ref_path, lr=lr["Selective-DPO"])
        return {"reference": ref_name, "k": k, **row, "reference_run": relative(ref_path)}

    names = ["weak (policy SFT)", f"strong (DPO {strong_size})"]
    calls = []
    for seed in pipe.config.seeds:
        calls += [lambda s=seed, n=n, k=k: sdpo_row(s, n, k) for n in names for k in ks]
        calls.append(lambda s=seed: {"reference": "-", "k": float("nan"), **train_and_evaluate(pipe, dpo, s, lr=lr["DPO"])})
    frame = _frame(share_work(calls))
    k = 0.4 if 0.4 in ks else ks[0]
    return frame, claim_rules.selective_dpo_claims(frame, k)


def cross_tokenizer(pipe: Pipeline, k: float = 0.3):
    """An oracle with a different tokenizer (B), its rewards carried to the policy's tokens (A), against
    the same-tokenizer oracle (R3): agreement with gold credit and the SePO policy it trains."""
    from transformers import AutoTokenizer

    from sepo.analysis import token_agreement
    from sepo.oracle import load_scored

    tokenizer_a = AutoTokenizer.from_pretrained(str(pipe.world.tokenizer_path))
    lr, sepo = chosen_setting(pipe, pipe.method("SePO"))
    rows = []
    for seed in pipe.config.seeds:
        same_dir, _ = pipe.oracle(seed)
        other_dir, _ = pipe.oracle(seed, tokenizer="b")
        carried_dir = pipe.carried_scores(other_dir, tokenizer_a)
        for label, run_dir in (("same tokenizer", same_dir), ("other tokenizer, carried", carried_dir)):
            agreement = token_agreement(load_scored(str(run_dir)), k=k, seed=seed)
            row = train_and_evaluate(pipe, sepo, seed, oracle_dir=run_dir, lr=lr)
            rows.append({"oracle": label, **row, "chosen_precision": agreement["chosen/precision"],
                         "random_precision": agreement["chosen/random_precision"], "spearman": agreement["chosen/spearman"]})
    frame = _frame(rows)
    return frame, claim_rules.cross_tokenizer_claims(frame)


def benchmark_evaluation(pipe: Pipeline, method_name: str, prompt_set: str, judge: str) -> dict[str, Any]:
    """Train one policy (as in the main table) and run the benchmark flow on it: sample it and its SFT
    model on ``prompt_set`` ("mini": the world's held-out prompts; or a benchmark of ``data/benchmarks``),
    judge the pairs with ``judge`` ("gold" offline; an LLM judge needs an API key), win rates and KL."""
    from sepo.cache import cached_run
    from sepo.evaluate import EvalConfig, run_evaluate
    from sepo.pipeline import summarize_evaluation

    c = pipe.config
    seed = c.seeds[0]
    lr, recipe = chosen_setting(pipe, pipe.method(method_name))
    oracle_dir = pipe.oracle(seed)[0] if recipe.needs_selection else None
    run_dir, _ = pipe.policy(recipe, seed, data=oracle_dir, lr=lr, snapshots=True)  # the main table's run of this method and seed
    values = dict(
        model_dir=str(Path(run_dir) / "model"), reference_dir=pipe.sft_path(c.policy_size),
        prompt_set=pipe.prompts_path() if prompt_set == "mini" else prompt_set, max_prompts=c.eval_prompts,
        num_samples=c.eval_samples, max_new_tokens=c.max_new_tokens, seed=seed, batch_size=c.eval_batch_size, judge=judge,
        generator=f"{method_name}-{c.policy_size}", reference_generator=f"SFT-{c.policy_size}",
        cutoff_loses=judge == "gold", **pipe.eval_values(judge),
    )
    eval_dir, metrics = cached_run("evaluate", EvalConfig, values, lambda cfg: run_evaluate(cfg, gold=pipe.world.judge),
                                   pipe.cache, out_field="out_dir")
    judge_label = "mini-world gold judge (VADER + degeneracy terms), not an LLM" if judge == "gold" else f"LLM judge: {judge}"
    return {"judge": judge_label, "prompt_set": prompt_set, "method": method_name, **_run(run_dir),
            "eval_run": relative(eval_dir), "metrics": metrics,
            **({"summary": summarize_evaluation(metrics)} if "vs_reference" in metrics else {})}
