"""Privacy accounting by dp-accounting (and Opacus as a second opinion): the libraries' published
reference values, the inverse (noise for a target epsilon), fixed-size sampling, the run-time
accountant, the CLI and the refusals."""
from __future__ import annotations

import pytest

from optsim.cli import main
from optsim.privacy import PrivacyAccountant, available_accountants, epsilon, noise_for_epsilon

# sigma 1.5, sample rate 0.04, delta 1e-5: the setting of Opacus's accountant tests
REF = dict(sample_rate=0.04, delta=1e-5)


@pytest.mark.parametrize("accountant, steps, value", [
    ("rdp", 2249, 7.32750140084), ("rdp", 2250, 7.32933470238),
    ("pld", 2249, 6.76705108993), ("pld", 2250, 6.76878737701)])
def test_dp_accounting_reference_values(accountant, steps, value):
    assert epsilon(1.5, steps=steps, accountant=accountant, **REF) == pytest.approx(value, abs=1e-10)


@pytest.mark.parametrize("accountant, steps, value", [
    ("opacus_rdp", 2250, 7.32911117143), ("opacus_prv", 2249, 6.777395712150674)])
def test_opacus_second_opinion_matches_its_own_tests(accountant, steps, value):
    pytest.importorskip("opacus")
    assert epsilon(1.5, steps=steps, accountant=accountant, **REF) == pytest.approx(value, abs=1e-8)


def test_tighter_accountant_and_monotonicity():
    rdp, pld = (epsilon(1.5, steps=500, accountant=a, **REF) for a in ("rdp", "pld"))
    assert pld < rdp
    assert epsilon(1.5, steps=501, **REF) > rdp > epsilon(2.0, steps=500, **REF)
    assert epsilon(1.5, steps=0, **REF) == 0.0


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_noise_for_epsilon_inverts_epsilon(accountant):
    target = 2.0
    sigma = noise_for_epsilon(target, steps=300, accountant=accountant, **REF)
    assert epsilon(sigma, steps=300, accountant=accountant, **REF) <= target
    assert epsilon(sigma * (1 - 1e-4), steps=300, accountant=accountant, **REF) > target


def test_full_participation_is_the_composed_gaussian_mechanism():
    """q = 1: the Gaussian mechanism composed T times, which is the Gaussian mechanism of
    sigma / sqrt(T) (exact under PLD up to its discretization)."""
    a = epsilon(4.0, sample_rate=1.0, steps=16, delta=1e-5, accountant="pld")
    b = epsilon(1.0, sample_rate=1.0, steps=1, delta=1e-5, accountant="pld")
    assert a == pytest.approx(b, rel=1e-3)


def test_fixed_size_sampling_is_replace_one_and_needs_a_population():
    fixed = epsilon(1.5, sample_rate=0.04, steps=100, delta=1e-5, sampling="fixed", population=1000)
    poisson = epsilon(1.5, sample_rate=0.04, steps=100, delta=1e-5)
    assert fixed > poisson  # replace-one neighbours: twice the add/remove sensitivity
    with pytest.raises(ValueError, match="population"):
        epsilon(1.5, sample_rate=0.04, steps=100, delta=1e-5, sampling="fixed")
    with pytest.raises(ValueError, match="whole number C"):
        epsilon(1.5, sample_rate=0.0415, steps=100, delta=1e-5, sampling="fixed", population=1000)
    with pytest.raises(ValueError, match="use accountant='rdp'"):
        epsilon(1.5, sample_rate=0.04, steps=100, delta=1e-5, sampling="fixed", population=1000, accountant="pld")
    assert "pld" not in available_accountants("fixed")


def test_run_accountant_equals_the_function_at_every_count():
    acc = PrivacyAccountant(1.2, 0.1, 1e-5)
    for count in (1, 9, 90, 900):
        acc.step(count)
        assert acc.epsilon() == pytest.approx(epsilon(1.2, 0.1, acc.steps, 1e-5), rel=1e-12)
    assert acc.epsilon("pld") == pytest.approx(epsilon(1.2, 0.1, acc.steps, 1e-5, "pld"), rel=1e-12)
    state = acc.state_dict()
    again = PrivacyAccountant(1.2, 0.1, 1e-5)
    again.load_state_dict(state)
    assert again.epsilon() == acc.epsilon()


@pytest.mark.parametrize("kwargs, match", [
    (dict(delta=None), "delta is required"), (dict(delta=1.0), r"delta must be in \(0, 1\)"),
    (dict(noise_multiplier=0.0), "noise_multiplier must be a positive"), (dict(steps=2.5), "whole number"),
    (dict(sample_rate=1.5), r"sample_rate must be in \(0, 1\]"), (dict(accountant="rdpp"), "rdp"),
    (dict(sampling="uniform"), "poisson")])
def test_refusals_name_the_fix(kwargs, match):
    args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=match):
        epsilon(**args)


def test_cli_prints_epsilon_and_the_inverse(capsys):
    assert main(["privacy", "--noise", "1.5", "--sample-rate", "0.04", "--steps", "2250", "--delta", "1e-5"]) == 0
    out = capsys.readouterr().out
    assert "7.32933" in out and "6.76879" in out
    assert main(["privacy", "--epsilon", "7.32933470238", "--sample-rate", "0.04", "--steps", "2250",
                 "--delta", "1e-5"]) == 0
    rows = dict(line.split() for line in capsys.readouterr().out.splitlines()[1:])
    assert float(rows["rdp"]) == pytest.approx(1.5, rel=1e-4)
