import copy

import pytest
import torch
from torch import nn

from normapps.norm import DomainBatchNorm
from normapps.tasks.domain_adaptation.adabn import adabn
from normapps.tasks.domain_adaptation.dsbn import dsbn_adapt
from normapps.tasks.domain_adaptation.methods import (
    METHODS, adapt_and_predict, method_options, resolve_methods, validate_options,
)
from normapps.norm import entropy_margin, norm_affine_params, softmax_entropy
from normapps.tasks.domain_adaptation.eata import Eata
from normapps.tasks.domain_adaptation.sar import Sar
from normapps.tasks.domain_adaptation.tent import Tent

ALL_NORMS = ["batch", "group", "layer"]


class Net(nn.Module):
    """conv-BN-ReLU, conv-GN-ReLU, pool, linear-LN, linear-BN1d-linear: every norm TENT touches."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.gn = nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.fc1, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
        self.fc2, self.bn2 = nn.Linear(16, 16), nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.gn(self.conv2(x))).mean(dim=(2, 3))
        x = torch.relu(self.ln(self.fc1(x)))
        return self.head(torch.relu(self.bn2(self.fc2(x))))


def make_data(n, shift=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    x[:, 0] += y.float().view(-1, 1, 1) - 1.5  # class signal in channel 0
    return x * scale + shift, y


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(0)
    model = Net()
    x, y = make_data(256)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(), loss.backward(), opt.step()
    return model.eval()


def test_adabn_running_stats_equal_target_population_stats(source_model):
    tx, _ = make_data(200, shift=2.0, scale=3.0, seed=1)
    model = adabn(source_model, tx, batch_size=64)  # 64, 64, 64, 8: unequal batches
    feats = source_model.conv1(tx)  # the first BN's input does not depend on any BN
    mean = feats.mean(dim=(0, 2, 3))
    var = feats.transpose(0, 1).reshape(8, -1).var(dim=1, unbiased=True)
    assert torch.allclose(model.bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(model.bn1.running_var, var, rtol=1e-4)
    # A later BN: population statistics of its input, earlier BNs normalizing per batch.
    ref, seen = copy.deepcopy(source_model).train(), []
    ref.bn2.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        for chunk in tx.split(64):
            ref(chunk)
    inputs = torch.cat(seen)
    assert torch.allclose(model.bn2.running_mean, inputs.mean(0), atol=1e-5)
    assert torch.allclose(model.bn2.running_var, inputs.var(0, unbiased=True), rtol=1e-4, atol=1e-6)
    src_rm = source_model.bn1.running_mean.clone()
    half = adabn(source_model, tx, batch_size=64, alpha=0.5)
    assert torch.allclose(half.bn1.running_mean, 0.5 * mean + 0.5 * src_rm, atol=1e-5)
    assert torch.equal(source_model.bn1.running_mean, src_rm)  # source untouched


def test_test_bn_uses_each_batch_statistics(source_model):
    tx, _ = make_data(64, shift=1.0, seed=2)
    logits = adapt_and_predict("test_bn", source_model, tx, batch_size=32)
    ref = copy.deepcopy(source_model).train()  # train mode = batch statistics
    expected = torch.cat([ref(c) for c in tx.split(32)])
    assert torch.allclose(logits, expected.detach(), atol=1e-5)


def test_tent_changes_only_norm_affine_and_resets_exactly(source_model):
    tx, _ = make_data(96, shift=1.5, seed=3)
    before = copy.deepcopy(source_model.state_dict())
    # official default: BN only
    default = Tent(source_model)
    assert {id(p) for p in default.params} == {id(p) for _, p in norm_affine_params(default.model, ["batch"])}
    assert len(default.params) == 2 * 2  # bn1, bn2
    tent = Tent(source_model, lr=1e-2, mode="continual", norms=ALL_NORMS)
    affine = {id(p) for _, p in norm_affine_params(tent.model)}
    assert len(affine) == 2 * 4  # weight+bias of bn1, gn, ln, bn2
    names = {n for n, p in tent.model.named_parameters() if id(p) in affine}
    for chunk in tx.split(32):
        tent(chunk)
    after = tent.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k]) and "num_batches" not in k}
    assert changed == names  # every norm affine parameter moved, nothing else (no running stats)
    assert all(torch.equal(before[k], v) for k, v in source_model.state_dict().items())
    tent.reset()
    assert all(torch.equal(before[k], v) for k, v in tent.model.state_dict().items())
    assert all(not s for s in tent.optimizer.state.values())  # Adam moments gone too


def test_tent_modes(source_model):
    tx, _ = make_data(64, shift=1.5, seed=4)
    opts = dict(batch_size=16, options={"lr": 1e-2, "steps": 1, "norms": ALL_NORMS})
    tb = adapt_and_predict("test_bn", source_model, tx, batch_size=16)
    # Episodic with one step predicts from the pre-update forward: exactly test-time BN.
    epi = adapt_and_predict("tent", source_model, tx, batch_size=16,
                            options={"lr": 1e-2, "steps": 1, "mode": "episodic", "norms": ALL_NORMS})
    assert torch.allclose(epi, tb, atol=1e-5)
    cont = adapt_and_predict("tent", source_model, tx, **{**opts, "options": {**opts["options"], "mode": "continual"}})
    assert not torch.allclose(cont[16:], tb[16:], atol=1e-4)
    assert torch.allclose(cont[:16], tb[:16], atol=1e-5)
    # reset every 2 batches: batch 3 starts from the source again, so equals batch 1 of a stream
    # starting at batch 3.
    rst = adapt_and_predict("tent", source_model, tx, batch_size=16,
                            options={"lr": 1e-2, "steps": 1, "mode": "reset", "reset_every": 2,
                                       "norms": ALL_NORMS})
    tail = adapt_and_predict("tent", source_model, tx[32:], batch_size=16,
                             options={"lr": 1e-2, "steps": 1, "mode": "continual", "norms": ALL_NORMS})
    assert torch.allclose(rst[32:], tail, atol=1e-5)
    assert torch.allclose(rst[:32], cont[:32], atol=1e-5)


def test_batch_size_one_does_not_crash(source_model):
    tx, _ = make_data(5, shift=1.0, seed=5)
    src = [make_data(64, seed=11)]
    for name in ("test_bn", "prior_bn", "tent", "eata", "sar"):
        opts = method_options(name, {})
        out = adapt_and_predict(name, source_model, tx, batch_size=1, options=opts, sources=src)
        assert out.shape == (5, 4) and torch.isfinite(out).all(), name


def test_prior_bn_between_test_bn_and_source(source_model):
    tx, _ = make_data(32, shift=1.5, seed=12)
    tb = adapt_and_predict("test_bn", source_model, tx, batch_size=8)
    src = adapt_and_predict("none", source_model, tx, batch_size=8)
    zero = adapt_and_predict("prior_bn", source_model, tx, batch_size=8, options={"prior_n": 0})
    huge = adapt_and_predict("prior_bn", source_model, tx, batch_size=8, options={"prior_n": 1e12})
    assert torch.allclose(zero, tb, atol=1e-4) and torch.allclose(huge, src, atol=1e-4)
    mid = adapt_and_predict("prior_bn", source_model, tx, batch_size=8, options={"prior_n": 8})
    assert not torch.allclose(mid, tb, atol=1e-3) and not torch.allclose(mid, src, atol=1e-3)


def test_eata_updates_on_exactly_the_selected_samples(source_model):
    tx, _ = make_data(32, shift=1.0, seed=13)
    src = make_data(64, seed=14)[0]
    eata = Eata(source_model, source_images=src, lr=1e-2, norms=ALL_NORMS, e_margin=0.4, d_margin=0.4,
                fisher_alpha=1.0, fisher_size=64)
    before = copy.deepcopy(eata.model.state_dict())
    with torch.no_grad():
        logits = eata.model(tx[:16])
    ent = softmax_entropy(logits)
    expected = int((ent < entropy_margin(4, 0.4)).sum())  # no mean prediction yet: all novel
    eata(tx[:16])
    assert eata.updated_samples == expected
    assert eata.fisher is not None and all(torch.isfinite(f).all() for f in eata.fisher)
    changed = any(not torch.equal(before[k], v) for k, v in eata.model.state_dict().items())
    assert changed == (expected > 0)
    # second batch: the redundancy filter against the moving mean prediction applies too
    mean = eata.mean_probs.clone()
    with torch.no_grad():
        logits2 = eata.model(tx[16:])
    ent2 = softmax_entropy(logits2)
    rel = ent2 < entropy_margin(4, 0.4)
    cos = torch.nn.functional.cosine_similarity(mean[None], logits2.softmax(1), dim=1)
    expected2 = int((rel & (cos.abs() < 0.4)).sum())
    eata(tx[16:])
    assert eata.updated_samples == expected + expected2
    # nothing reliable (E0 ~ 0): no update at all
    strict = Eata(source_model, source_images=src, e_margin=1e-9, fisher_alpha=0.0, norms=ALL_NORMS)
    start = copy.deepcopy(strict.model.state_dict())
    strict(tx)
    assert strict.updated_samples == 0
    assert all(torch.equal(start[k], v) for k, v in strict.model.state_dict().items() if "num_batches" not in k)
    with pytest.raises(ValueError, match="source images"):
        Eata(source_model, source_images=None, fisher_alpha=1.0)


def test_sar_recovery_restores_the_initial_state(source_model):
    tx, _ = make_data(16, shift=1.0, seed=15)
    sar = Sar(source_model, lr=1e-2, reset_constant=0.0)
    init = copy.deepcopy(sar.model.state_dict())
    sar(tx)
    assert sar.resets == 0 and sar.ema is not None
    assert any(not torch.equal(init[k], v) for k, v in sar.model.state_dict().items())
    # a moving-average entropy below reset_constant means collapse: back to the source, exactly
    recover = Sar(source_model, lr=1e-2, e_margin=10.0, reset_constant=100.0)
    recover(tx)
    assert recover.resets == 1 and recover.ema is None
    assert all(torch.equal(init[k], v) for k, v in recover.model.state_dict().items())
    assert not recover.optimizer.base_optimizer.state


def test_sar_filters_reliable_samples_twice(source_model):
    tx, _ = make_data(16, shift=1.0, seed=16)
    sar = Sar(source_model, lr=1e-2, e_margin=1e-9)  # nothing reliable: no update, no EMA
    init = copy.deepcopy(sar.model.state_dict())
    sar(tx)
    assert sar.ema is None
    assert all(torch.equal(init[k], v) for k, v in sar.model.state_dict().items() if "num_batches" not in k)


def test_dsbn_separate_statistics_per_domain_and_mixed_routing(source_model):
    s1 = make_data(128, seed=6)
    s2 = make_data(128, shift=-2.0, seed=7)  # a second labelled source: three domains in all
    tx, ty = make_data(96, shift=3.0, scale=2.0, seed=8)
    model = dsbn_adapt(source_model, [s1, s2], [tx], stage1_epochs=1, stage2_epochs=1,
                       threshold=0.5, batch_size=32, lr=0.01)
    dbn = model.bn1
    assert isinstance(dbn, DomainBatchNorm) and dbn.num_domains == 3
    # Non-BN weights are shared (one copy); each domain has its own BN statistics.
    assert sum(isinstance(m, DomainBatchNorm) for m in model.modules()) == 2
    means = [bn.running_mean for bn in dbn.bns]
    assert not torch.allclose(means[0], means[2], atol=0.1)
    assert not torch.allclose(means[1], means[2], atol=0.1)
    # Target branch statistics track the target's conv1 output (momentum average of batches).
    with torch.no_grad():
        tmean = model.conv1(tx).mean(dim=(0, 2, 3))
    assert torch.allclose(means[2], tmean, atol=0.35 * float(tmean.abs().max()) + 0.1)
    # A mixed batch routed per sample equals routing each domain's samples separately.
    x = torch.cat([s1[0][:5], tx[:5], s2[0][:5]])
    dom = torch.tensor([0] * 5 + [2] * 5 + [1] * 5)
    from normapps.norm import domain_context, set_domain

    with torch.no_grad():
        set_domain(model, dom)
        mixed = model(x)
        parts = []
        for d, xs in ((0, s1[0][:5]), (2, tx[:5]), (1, s2[0][:5])):
            with domain_context(model, d):
                parts.append(model(xs))
    assert torch.allclose(mixed, torch.cat(parts), atol=1e-5)
    # The source model was not converted in place.
    assert isinstance(source_model.bn1, nn.BatchNorm2d)


def test_dsbn_through_adapt_and_predict(source_model):
    tx, ty = make_data(64, shift=2.0, seed=9)
    src = [make_data(128, seed=10)]
    opts = method_options("dsbn", {"dsbn": {"stage1_epochs": 1, "stage2_epochs": 1, "batch_size": 32}})
    # the previous release's flat names still work
    assert method_options("dsbn", {"stage1_epochs": 1, "stage2_epochs": 1, "dsbn_batch_size": 32}) == opts
    logits = adapt_and_predict("dsbn", source_model, tx, batch_size=32, options=opts, sources=src)
    assert logits.shape == (64, 4)
    with pytest.raises(ValueError, match="source"):
        adapt_and_predict("dsbn", source_model, tx, batch_size=32, options=opts)


def test_option_validation():
    assert resolve_methods("all") == list(METHODS)
    with pytest.raises(ValueError, match="unknown adapt method"):
        resolve_methods("bogus")
    with pytest.raises(ValueError, match="adapt.tent.mode"):
        validate_options(["tent"], {"mode": "sometimes"})
    with pytest.raises(ValueError, match="reset_every"):
        validate_options(["tent"], {"tent": {"mode": "reset", "reset_every": 0}})
    with pytest.raises(ValueError, match="alpha"):
        validate_options(["adabn"], {"alpha": 1.5})
    with pytest.raises(ValueError, match="threshold"):
        validate_options(["dsbn"], {"threshold": 2})
    with pytest.raises(ValueError, match="prior_n"):
        validate_options(["prior_bn"], {"prior_n": -1})
    with pytest.raises(ValueError, match="adapt.eata.d_margin"):
        validate_options(["eata"], {"eata": {"d_margin": 0}})
    with pytest.raises(ValueError, match="adapt.sar.rho"):
        validate_options(["sar"], {"sar": {"rho": -1}})
    with pytest.raises(ValueError, match="adapt.sar.norms"):
        validate_options(["sar"], {"sar": {"norms": ["weird"]}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) adapt.tent"):
        validate_options(["tent"], {"tent": {"learning_rate": 1}})


def test_run_level_checks(tmp_path):
    from normapps.tasks.domain_adaptation.runner import check_applicable
    from normapps.tasks.domain_adaptation.targets import parse_target_spec

    with pytest.raises(ValueError, match="adapt.tent.norms"):
        check_applicable(["tent"], ["group"], {}, has_ckpt=False)
    with pytest.raises(ValueError, match="model.norm=batch"):
        check_applicable(["dsbn"], ["layer"], {}, has_ckpt=False)
    check_applicable(["tent", "dsbn"], ["batch", "group"], {}, has_ckpt=False)  # n/a rows only
    check_applicable(["sar"], ["group", "layer"], {}, has_ckpt=False)
    with pytest.raises(ValueError, match="data.target.stream must be one of"):
        parse_target_spec({"corruption": "fog", "stream": "sideways"})
    with pytest.raises(ValueError, match="data.target.dirichlet"):
        parse_target_spec({"corruption": "fog", "stream": "label_shift", "dirichlet": None})
    with pytest.raises(ValueError, match="data.target.batch_size"):
        parse_target_spec({"corruption": "fog", "batch_size": 0})
    with pytest.raises(FileNotFoundError, match="fog.npy"):
        parse_target_spec({"corruption": "fog", "released_dir": str(tmp_path)})
    spec = parse_target_spec({"corruption": ["fog", "contrast"], "stream": "mixed", "n_examples": 5})
    assert spec.corruptions == ["fog", "contrast"] and spec.stream == "mixed" and spec.n_examples == 5
