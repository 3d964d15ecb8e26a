import jax.random as jr
import numpy as np
import pytest

import dlnsim


def test_loss_is_half_trace_formula():
    k1, k2, k3 = jr.split(jr.PRNGKey(0), 3)
    teacher = dlnsim.random_teacher(k1, 3, 4)
    cov = dlnsim.correlated_input_cov(k2, 4)
    task = dlnsim.Task(teacher, cov)
    w = np.asarray(jr.normal(k3, (3, 4)))
    d = w - np.asarray(teacher)
    assert float(task.loss(w)) == pytest.approx(0.5 * np.trace(d @ np.asarray(cov) @ d.T), rel=1e-13)
    r = np.asarray(task.whitened_residual(w))
    assert float(task.loss(w)) == pytest.approx(0.5 * np.sum(r**2), rel=1e-12)


def test_default_input_cov_is_identity():
    task = dlnsim.Task(np.ones((2, 3)))
    np.testing.assert_array_equal(task.input_cov, np.eye(3))


def test_random_teacher_spectrum():
    t = dlnsim.random_teacher(jr.PRNGKey(0), 6, 5, rank=3)
    s = np.linalg.svd(np.asarray(t), compute_uv=False)
    np.testing.assert_allclose(s, [3, 2, 1, 0, 0], atol=1e-12)
    t = dlnsim.random_teacher(jr.PRNGKey(0), 4, 4, spectrum=[5.0, 0.5])
    np.testing.assert_allclose(np.linalg.svd(np.asarray(t), compute_uv=False)[:2], [5.0, 0.5], rtol=1e-12)


def test_correlated_input_cov_eigenvalues():
    cov = dlnsim.correlated_input_cov(jr.PRNGKey(0), 10)
    evals = np.sort(np.linalg.eigvalsh(np.asarray(cov)))[::-1]
    np.testing.assert_allclose(evals, np.exp(-5 * np.arange(10) / 10), rtol=1e-12)


def test_student_teacher_losses_match_sample_averages():
    data = dlnsim.student_teacher(jr.PRNGKey(0), width=8, samples=20, test_samples=50)
    w = np.asarray(jr.normal(jr.PRNGKey(1), (8, 8)))
    x, y = np.asarray(data.train_inputs), np.asarray(data.train_targets)
    assert float(data.train_loss(w)) == pytest.approx(0.5 * np.mean(np.sum((y - x @ w.T) ** 2, 1)), rel=1e-12)
    xt, yt = np.asarray(data.test_inputs), np.asarray(data.test_targets)
    assert float(data.test_loss(w)) == pytest.approx(
        0.5 * np.mean(np.sum((yt - xt @ w.T) ** 2, 1)), rel=1e-12
    )
    # the empirical least-squares map minimises the train loss at the irreducible constant
    assert float(data.train_loss(data.task.teacher)) == pytest.approx(float(data.irreducible_loss), rel=1e-10)
    assert float(data.irreducible_loss) > 0
    # noise: rms teacher strength over SNR
    s = np.linalg.svd(np.asarray(data.true_teacher), compute_uv=False)[:3]
    assert data.noise_std == pytest.approx(np.sqrt(np.mean(s**2)) / 10, rel=1e-12)


def test_mode_strengths_recover_targets_at_teacher():
    data = dlnsim.student_teacher(jr.PRNGKey(2), width=6, samples=12)
    task = data.task
    _, s, _ = task.mode_basis()
    np.testing.assert_allclose(task.mode_strengths(task.teacher), s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(task.mode_strengths(0 * task.teacher), 0.0, atol=1e-15)


def test_load_regression_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y = x @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(30, 2))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    task, const = dlnsim.load_regression_data(str(tmp_path / "d.npz"))
    w = rng.normal(size=(2, 4))
    assert float(task.loss(w) + const) == pytest.approx(
        0.5 * np.mean(np.sum((y - x @ w.T) ** 2, 1)), rel=1e-12
    )
    np.savez(tmp_path / "bad.npz", x=np.full((3, 2), np.nan), y=np.ones((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        dlnsim.load_regression_data(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="arrays named"):
        np.savez(tmp_path / "wrong.npz", a=x)
        dlnsim.load_regression_data(str(tmp_path / "wrong.npz"))


@pytest.mark.parametrize(
    "teacher, cov, match",
    [
        (np.ones(3), None, "2-D"),
        (np.full((2, 2), np.inf), None, "non-finite"),
        (np.ones((2, 3)), np.eye(2), "must be \\(3, 3\\)"),
        (np.ones((2, 2)), np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.ones((2, 2)), np.array([[1.0, 0.0], [0.0, -1.0]]), "positive semi-definite"),
    ],
)
def test_task_validation(teacher, cov, match):
    with pytest.raises(ValueError, match=match):
        dlnsim.Task(teacher, cov)


def test_student_teacher_validation():
    with pytest.raises(ValueError, match="snr"):
        dlnsim.student_teacher(jr.PRNGKey(0), snr=0)
    with pytest.raises(ValueError, match="rank"):
        dlnsim.student_teacher(jr.PRNGKey(0), width=4, rank=5)


def test_student_teacher_training_inputs_are_white():
    """Huh 2020, sec. 2 assumes Sigma_x = I: the training inputs' empirical correlation is the
    identity, also at P = N where raw Gaussian draws are badly conditioned."""
    for width, samples in ((16, 16), (8, 8), (6, 20)):
        data = dlnsim.student_teacher(jr.PRNGKey(0), width=width, samples=samples, test_samples=30)
        x = np.asarray(data.train_inputs)
        np.testing.assert_allclose(x.T @ x / samples, np.eye(width), rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(data.task.input_cov), np.eye(width), rtol=0, atol=1e-12)
        # the targets come from the white inputs; the least-squares map is Sigma_yx = y^T x / P
        y = np.asarray(data.train_targets)
        np.testing.assert_allclose(np.asarray(data.task.teacher), y.T @ x / samples, rtol=1e-10, atol=1e-12)
    # symmetric (ZCA) whitening: x_white = x_raw (x_raw^T x_raw / P)^(-1/2)
    raw = dlnsim.student_teacher(jr.PRNGKey(4), width=5, samples=9, whiten=False)
    white = dlnsim.student_teacher(jr.PRNGKey(4), width=5, samples=9)
    xr = np.asarray(raw.train_inputs)
    evals, evecs = np.linalg.eigh(xr.T @ xr / 9)
    np.testing.assert_allclose(
        np.asarray(white.train_inputs), xr @ (evecs / np.sqrt(evals)) @ evecs.T, rtol=1e-10, atol=1e-12
    )
    # the teacher, the noise level and the (unwhitened) test set are shared
    np.testing.assert_array_equal(np.asarray(white.true_teacher), np.asarray(raw.true_teacher))
    np.testing.assert_array_equal(np.asarray(white.test_inputs), np.asarray(raw.test_inputs))
    assert white.noise_std == raw.noise_std


def test_student_teacher_is_deterministic():
    a = dlnsim.student_teacher(jr.PRNGKey(7), width=8, samples=8, test_samples=20)
    b = dlnsim.student_teacher(jr.PRNGKey(7), width=8, samples=8, test_samples=20)
    for name in ("train_inputs", "train_targets", "test_inputs", "test_targets", "true_teacher"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    assert float(a.irreducible_loss) == float(b.irreducible_loss)


def test_student_teacher_unwhitened_reproduces_the_raw_draws():
    """whiten=False gives the data the task drew before whitening existed (values recorded then)."""
    d = dlnsim.student_teacher(jr.PRNGKey(3), width=5, samples=7, test_samples=4, whiten=False)
    np.testing.assert_allclose(
        np.asarray(d.train_inputs[0]),
        [-0.2474329954427921, -0.23452413307027384, -0.6106098573630928, -0.5735054763461462,
         0.02761911825041167],
        rtol=1e-13,
    )  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(d.train_targets[1]),
        [
            -0.5183572187890821,
            0.12578806764788014,
            -1.417677630866662,
            0.8878255279673624,
            0.7336410286935148,
        ],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        np.asarray(d.test_inputs[2]),
        [0.2389237082488413, 0.02432284829489672, 0.3046205829678928, 2.196502451808305, -0.1139794233763824],
        rtol=1e-13,
    )
    assert float(d.irreducible_loss) == pytest.approx(0.025809906129897284, rel=1e-10)
    assert float(d.task.teacher[0, 0]) == pytest.approx(0.36575986811042904, rel=1e-10)
    x = np.asarray(d.train_inputs)
    assert np.max(np.abs(x.T @ x / 7 - np.eye(5))) > 0.1  # raw draws: far from white


def test_student_teacher_white_inputs_need_p_at_least_n():
    with pytest.raises(ValueError, match=r"samples >= width \(P >= N\), got 8 samples for width 16"):
        dlnsim.student_teacher(jr.PRNGKey(0), width=16, samples=8)
    d = dlnsim.student_teacher(jr.PRNGKey(0), width=16, samples=8, whiten=False)
    assert d.train_inputs.shape == (8, 16)
    with pytest.raises(ValueError, match="whiten must be True or False"):
        dlnsim.student_teacher(jr.PRNGKey(0), whiten="yes")


def test_determinant_saddle_loss_applies_only_to_square_nets_of_the_wrong_sign():
    teacher = np.diag([3.0, 2.0, 1.0])
    cov = np.diag([1.0, 0.5, 2.0])
    task = dlnsim.Task(teacher, cov)
    w1, w2 = np.diag([1.0, 1.0, -1.0]), np.eye(3)
    # 1/2 sigma_min(W* Sigma_x^(1/2))^2: singular values 3, sqrt(2), sqrt(2)
    assert dlnsim.determinant_saddle_loss((w1, w2), task) == pytest.approx(1.0, rel=1e-12)
    assert dlnsim.determinant_saddle_loss((np.eye(3), w2), task) is None  # the right sign
    wide = (np.vstack([w1, np.ones((1, 3))]), np.hstack([w2, np.ones((3, 1))]))
    assert dlnsim.determinant_saddle_loss(wide, task) is None  # a wider hidden layer
    singular = dlnsim.Task(np.diag([3.0, 2.0, 0.0]), cov)
    assert dlnsim.determinant_saddle_loss((w1, w2), singular) is None
    # a transposed or unwhitened formula gives 1/2 min(s)^2 = 0.5 here, not 1
    skew = dlnsim.Task(np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]), cov)
    expected = 0.5 * np.linalg.svd(skew.teacher @ np.sqrt(cov), compute_uv=False)[-1] ** 2
    assert dlnsim.determinant_saddle_loss((w1, w2), skew) == pytest.approx(expected, rel=1e-12)
