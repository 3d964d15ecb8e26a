"""``dlnsim wide``: discrete NGD of a wide MLP with an approximate Fisher, set against the
infinite-width theory (Karakida & Osawa 2020)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import jax.random as jr
import numpy as np
import typer

from .._checks import check_depth, check_nonnegative, check_positive
from .._resources import check_resources, wide_widths
from .._resources_wide import estimate_wide_run
from ..wide import (
    MLP,
    Fisher,
    compare_with_theory,
    digits_task,
    fisher_class,
    forster_transform,
    load_wide_data,
    loss_named,
    synthetic_task,
)
from ._boundary import check_seed, claim, cli_words, fail, write_json
from ._options import Overwrite, out_option

WIDE_DATASETS = ("synthetic", "digits")

# The arrays of the summary written to curves.npz, one value per step.
_CURVES = ("train_loss", "theory_loss", "deviation", "test_loss", "gd_theory_loss", "gd_theory_test_loss")


def _check_counts(*, depth, width, samples, test_samples, outputs, steps, rho, lr) -> None:
    """Refuses (ValueError) sizes that are not positive integers, a negative step count or damping,
    and a non-positive learning rate."""
    check_depth(depth)
    for name, v in (("width", width), ("samples", samples), ("test-samples", test_samples),
                    ("outputs", outputs)):  # fmt: skip
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    check_nonnegative("--rho (--damping)", rho)
    if lr is not None:
        check_positive("lr", lr)


def _digit_classes(classes: str) -> list[int] | None:
    """``--classes`` as a list of digits, or None for ``all``."""
    if classes.strip() == "all":
        return None
    try:
        return [int(c) for c in classes.split(",")]
    except ValueError:
        raise ValueError(f"--classes must be digits like 0,7 or 'all', got {classes!r}") from None


def wide(
    ctx: typer.Context,
    fisher: Annotated[
        str, typer.Option(help="exact | bd | tri-diagonal | kfac | unit-wise | diagonal | quasi-diagonal.")
    ] = "bd",
    depth: Annotated[int, typer.Option(help="Number of weight layers L (>= 1).")] = 3,
    width: Annotated[int, typer.Option(help="Width M of every hidden layer.")] = 512,
    samples: Annotated[int, typer.Option(help="Training samples N.")] = 16,
    input_dim: Annotated[
        int | None, typer.Option(help="Input dimension M0 (synthetic data; default 32; digits: 64).")
    ] = None,
    outputs: Annotated[
        int, typer.Option(help="Outputs C of the synthetic task (>= 2: one-hot classes).")
    ] = 1,
    activation: Annotated[str, typer.Option(help="relu | tanh | erf | shifted-relu | identity.")] = "relu",
    shift: Annotated[float, typer.Option(help="Shift s of shifted-relu (S.156).")] = 0.0,
    sigma_w2: Annotated[float, typer.Option(help="Weight variance sigma_w^2.")] = 2.0,
    sigma_b2: Annotated[float, typer.Option(help="Bias variance sigma_b^2.")] = 0.5,
    bias: Annotated[bool, typer.Option(help="Include bias terms.")] = True,
    rho: Annotated[
        float, typer.Option("--rho", "--damping", help="Damping rho >= 0 of the Fisher (0: pseudo-inverse).")
    ] = 0.0,
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate; default the theory-optimal 1/alpha (0.1/alpha for CE)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Number of NGD steps T.")] = 10,
    dataset: Annotated[
        str, typer.Option(help="synthetic | digits (scikit-learn's bundled 8x8 digits).")
    ] = "synthetic",
    classes: Annotated[
        str, typer.Option(help="Digits to use, e.g. 0,7 (two classes: +-0.5) or all.")
    ] = "0,7",
    data: Annotated[
        Path | None, typer.Option(help="Your own .npz with x (N, M0), y (N,) or (N, C); overrides --dataset.")
    ] = None,
    test_samples: Annotated[int, typer.Option(help="Held-out test samples.")] = 100,
    forster: Annotated[
        bool, typer.Option("--forster", help="K-FAC with M0 < N: Forster-transform the inputs.")
    ] = False,
    loss: Annotated[str, typer.Option(help="mse | cross-entropy (layer-wise Fishers, S.157-S.167).")] = "mse",
    ce_damping: Annotated[
        float, typer.Option(help="Damping rho~ of the softmax Hessian (cross-entropy, S.158).")
    ] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed for the data and the initial weights (0 to 2^63 - 1).")] = 0,
    out: Annotated[Path | None, out_option("Output directory (default runs/wide-<fisher>-L<depth>).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Discrete NGD of a wide MLP with an approximate Fisher, set against the NTK theory
    (Karakida & Osawa 2020). Writes summary.json, curves.npz and loss.png."""
    try:
        fisher_class(fisher)
        loss_named(loss)
        _check_counts(
            depth=depth, width=width, samples=samples, test_samples=test_samples, outputs=outputs,
            steps=steps, rho=rho, lr=lr,
        )  # fmt: skip
        if forster and fisher != "kfac":
            raise ValueError("--forster applies to --fisher kfac only (Karakida & Osawa 2020, S.108-S.111)")
        fis = Fisher(
            fisher, rho, kfac_bias="block" if forster else "augmented", loss=loss, ce_damping=ce_damping
        )
        fis.check_depth(depth)
        k_data, k_net = jr.split(jr.PRNGKey(check_seed(seed)))
        one_hot = loss == "cross-entropy"
        if data is not None:
            task = load_wide_data(str(data), key=k_data)
        elif dataset == "synthetic":
            m0 = 32 if input_dim is None else input_dim
            if int(m0) != m0 or m0 < 1:
                raise ValueError(f"input-dim must be an integer >= 1, got {m0!r}")
            check_resources(
                estimate_wide_run(
                    wide_widths(depth, width, m0, outputs), samples=samples, outputs=outputs, fisher=fisher,
                    steps=steps, test_samples=test_samples, bias=bias, loss=loss,
                ),
                what="dlnsim wide",
            )  # fmt: skip
            task = synthetic_task(k_data, samples, m0, outputs=outputs, test_samples=test_samples)
        elif dataset == "digits":
            if input_dim is not None and input_dim != 64:
                raise ValueError(f"the digits are 8x8 images: input-dim is 64, got {input_dim}")
            task = digits_task(
                k_data, samples, classes=_digit_classes(classes), test_samples=test_samples, one_hot=one_hot
            )
        else:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(WIDE_DATASETS)}")
        if loss == "cross-entropy" and task.outputs < 2:
            raise ValueError(
                "cross-entropy needs one-hot targets with >= 2 outputs: "
                "use --outputs >= 2 or --dataset digits"
            )
        if forster:
            task = type(task)(
                forster_transform(task.x_train), task.y_train, task.x_test, task.y_test, task.kind,
                task.description + "; Forster-transformed training inputs",
            )  # fmt: skip
        widths = wide_widths(depth, width, task.input_dim, task.outputs)
        check_resources(
            estimate_wide_run(
                widths, samples=task.n_samples, outputs=task.outputs, fisher=fisher, steps=steps,
                test_samples=int(task.x_test.shape[0]), bias=bias, loss=loss,
            ),
            what="dlnsim wide",
        )  # fmt: skip
        net = MLP(widths, activation, key=k_net, sigma_w2=sigma_w2, sigma_b2=sigma_b2, bias=bias, shift=shift)
        if not np.all(np.isfinite(np.asarray(net(task.x_train)))):
            raise ValueError(
                f"the initial network's outputs overflow (--sigma-w2 {sigma_w2:g}, --sigma-b2 {sigma_b2:g}, "
                f"depth {depth}); use variances of order 1"
            )
        out = Path(out) if out is not None else Path("runs") / f"wide-{fisher}-L{depth}"
        target = claim(ctx, out, overwrite, "dlnsim wide", 64 * (steps + 1) + (2 << 20))
    except ValueError as err:
        fail(str(err))
    start = time.perf_counter()
    try:
        summary = compare_with_theory(
            net, task, fis, learning_rate=lr, steps=steps, forster=forster
        ).as_dict()
    except FloatingPointError as err:
        fail(cli_words(str(err)), code=1)
    summary["seed"] = seed
    summary["wall_time_s"] = round(time.perf_counter() - start, 3)
    from ._figures import plot_wide  # matplotlib loads only when a command draws

    with target.writing() as tmp:
        write_json(tmp / "summary.json", summary)
        np.savez(tmp / "curves.npz", **{k: np.asarray(summary[k], dtype=float) for k in _CURVES})
        plot_wide(summary, tmp / "loss.png")
    typer.echo(
        f"{fisher}-NGD, L={depth}, M={width}, N={task.n_samples}: alpha theory {summary['alpha_theory']}, "
        f"measured {summary['alpha_measured']:.8g}, isotropy condition number "
        f"{summary['isotropy_condition_number']:.6g}"
    )
    typer.echo(
        f"lr {summary['learning_rate']:.4g}: train loss {summary['train_loss'][0]:.3e} -> "
        f"{summary['train_loss'][-1]:.3e} (theory {summary['theory_loss'][-1]:.3e}); max deviation from "
        f"theory {summary['max_deviation']:.3e}; test loss {summary['test_loss'][-1]:.4g}"
    )
    typer.echo(f"wrote {out}/summary.json, curves.npz, loss.png")


__all__ = ["WIDE_DATASETS", "wide"]
