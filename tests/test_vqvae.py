"""Quantisers and the VQ-VAE: straight-through gradients, EMA and restart mechanics,
usage metrics, FSQ's grid, the loss_terms contract and short training runs."""

import math

import pytest
import torch

from mtvae import metrics as M
from mtvae.data import Dataset, Split
from mtvae.errors import MTVAEError
from mtvae.models import VAE, VQVAE, CapacityVAE
from mtvae.quantizers import FSQ, PRESETS, VectorQuantizer, make_quantizer, perplexity
from mtvae.terms import Terms
from mtvae.train import fit


def _grid(rows):
    """[N, D] rows -> [1, D, 1, N] encoder outputs (one image, one row of positions)."""
    return torch.as_tensor(rows, dtype=torch.float32).T[None, :, None, :]


@pytest.mark.parametrize("preset", ["plain", "ema", "ema-restart", "kmeans"])
@pytest.mark.parametrize("training", [True, False])
def test_straight_through_gradient_is_the_identity(preset, training):
    torch.manual_seed(0)
    q = make_quantizer(preset, dim=3, num_codes=8)
    q.train(training)
    if not training:
        q.train()(torch.randn(2, 3, 4, 4))  # initialise, then evaluate
        q.eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = q(z_e)
    upstream = torch.randn_like(out.z_q)
    (grad,) = torch.autograd.grad((out.z_q * upstream).sum(), z_e)
    torch.testing.assert_close(grad, upstream)  # d z_q / d z_e = I
    if training:
        return  # (training updates the codebook after the lookup)
    # ... while the forward value is the nearest code, not z_e
    codes = q.codes().detach()
    torch.testing.assert_close(out.z_q.detach().permute(0, 2, 3, 1).reshape(-1, 3),
                               codes[out.indices.reshape(-1)])


def test_ema_update_matches_the_formula_on_a_hand_example():
    q = VectorQuantizer(2, 1, ema=True, decay=0.5, eps=0.5)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0], [1.0]]))
        q.usage.copy_(torch.tensor([1.0, 1.0]))
        q.ema_sum.copy_(torch.tensor([[0.0], [1.0]]))
        q.initialized.fill_(True)
    q.train()
    out = q(_grid([[0.2], [0.9], [1.1]]))
    assert out.indices.reshape(-1).tolist() == [0, 1, 1]
    # N = 0.5 [1, 1] + 0.5 [1, 2] = [1, 1.5];  m = 0.5 [0, 1] + 0.5 [0.2, 2.0] = [0.1, 1.5]
    torch.testing.assert_close(q.usage, torch.tensor([1.0, 1.5]))
    torch.testing.assert_close(q.ema_sum, torch.tensor([[0.1], [1.5]]))
    # Laplace smoothing: N~ = (N + 0.5) / (2.5 + 2 * 0.5) * 2.5 = [15/14, 10/7]; e = m / N~
    expected = torch.tensor([[0.1 * 14 / 15], [1.5 * 7 / 10]])
    torch.testing.assert_close(q.embedding.detach(), expected)
    assert set(out.losses) == {"commitment"}, "an EMA codebook has no codebook loss"


def test_commitment_and_codebook_losses_on_a_hand_example():
    q = VectorQuantizer(2, 1, beta=0.25)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0], [1.0]]))
    q.eval()
    out = q(_grid([[0.2], [0.9], [1.1]]))
    sq = 0.2**2 + 0.1**2 + 0.1**2  # summed over the image's positions
    torch.testing.assert_close(out.losses["codebook"], torch.tensor(sq))
    torch.testing.assert_close(out.losses["commitment"], torch.tensor(0.25 * sq))
    out.losses["codebook"].backward()
    # d/de_k sum_i (e_k - z_i)^2 over rows assigned to k
    torch.testing.assert_close(q.embedding.grad, torch.tensor([[2 * (0 - 0.2)],
                                                               [2 * (1 - 0.9) + 2 * (1 - 1.1)]]))


def test_perplexity_on_known_assignments():
    assert float(perplexity(torch.tensor([0, 0, 1, 1]), 4)) == pytest.approx(2.0)
    assert float(perplexity(torch.arange(8), 8)) == pytest.approx(8.0)
    assert float(perplexity(torch.zeros(10, dtype=torch.long), 8)) == pytest.approx(1.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(perplexity(torch.tensor([[0, 0], [0, 3]]), 4)) == pytest.approx(math.exp(h))


def test_a_dead_code_is_restarted_onto_an_encoder_output():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, ema=True, restart_threshold=1.0)
    q.train()
    batch = torch.randn(2, 2, 3, 3)
    q(batch)  # initialises usage to 1 and updates it
    with torch.no_grad():
        q.embedding[3] = torch.tensor([100.0, 100.0])
        q.ema_sum[3] = torch.tensor([100.0, 100.0])
        q.usage.fill_(5.0)
        q.usage[3] = 0.0  # never used any more
    before = int(q.restarts)
    rows = batch.permute(0, 2, 3, 1).reshape(-1, 2)
    dead = q.restart_dead(rows)
    assert dead.tolist() == [3]
    assert int(q.restarts) == before + 1
    assert (q.embedding[3] == rows).all(1).any(), "the code now sits on an encoder output"
    assert float(q.usage[3]) == 1.0
    # and through forward: a code far from all data stops being dead after one step
    with torch.no_grad():
        q.embedding[2] = torch.tensor([-50.0, 50.0])
        q.usage[2] = 0.0
    q(batch)
    assert q.embedding[2].abs().max() < 10
    # evaluation never restarts or updates
    with torch.no_grad():
        q.usage[1] = 0.0
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()
    q(batch)
    for k, v in q.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_kmeans_initialisation_finds_separated_clusters():
    torch.manual_seed(1)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    rows = centres.repeat_interleave(25, 0) + 0.1 * torch.randn(100, 2)
    q = VectorQuantizer(4, 2, kmeans_init=True)
    q.train()
    out = q(_grid(rows))
    assert float(out.perplexity) == pytest.approx(4.0)
    dist = torch.cdist(q.embedding.detach(), centres)
    assert (dist.min(1).values < 0.2).all() and sorted(dist.argmin(1).tolist()) == [0, 1, 2, 3]


def test_lowdim_l2_codes_lie_on_the_unit_sphere():
    torch.manual_seed(0)
    q = make_quantizer("lowdim-l2", dim=6, num_codes=16)
    out = q.train()(torch.randn(2, 6, 4, 4))
    assert q.codes().shape == (16, 4)
    torch.testing.assert_close(q.codes().norm(dim=1), torch.ones(16))
    assert out.z_q.shape == (2, 6, 4, 4)


def test_fsq_rounds_to_the_level_grid():
    fsq = FSQ(dim=3, levels=(8, 6, 5))
    assert fsq.num_codes == 240
    z = 4 * torch.randn(5000, 3)
    q = fsq.quantize(z)
    half = torch.tensor([4.0, 3.0, 2.0])
    scaled = q * half
    torch.testing.assert_close(scaled, scaled.round())
    for c, levels in enumerate((8, 6, 5)):
        values = sorted(set(scaled[:, c].round().long().tolist()))
        assert values == list(range(-(levels // 2), levels - levels // 2)), values
    idx = torch.arange(240)
    assert fsq.codes_to_indices(fsq.indices_to_codes(idx)).tolist() == idx.tolist()
    # straight through: gradient of the rounding step is the identity (through tanh)
    z = torch.zeros(1, 3, requires_grad=True)
    fsq.quantize(z).sum().backward()
    assert (z.grad > 0).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_vqvae_loss_terms_contract(preset):
    torch.manual_seed(0)
    model = VQVAE(quantizer=preset, num_codes=None if preset == "fsq" else 32, channels=8,
                  n_classes=10)
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    terms = model.loss_terms({"x": x, "y": torch.arange(6)})
    assert isinstance(terms, Terms)
    assert set(terms.tasks) == {"x", "y"}
    expected = {"fsq": set(), "ema": {"commitment"}, "ema-restart": {"commitment"},
                "ema-restart-kmeans": {"commitment"}}.get(preset, {"codebook", "commitment"})
    assert set(terms.regularizers) == expected
    assert terms.shared is not None and terms.shared.shape == (6, 16, 7, 7)
    terms.total().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.reconstruct(x).shape == x.shape
    assert model.decode_indices(torch.zeros(2, 7, 7, dtype=torch.long)).shape == (2, 1, 28, 28)


def test_bad_arguments_name_the_fix():
    with pytest.raises(MTVAEError, match=r"valid quantizers are: .*ema-restart.*fsq"):
        VQVAE(quantizer="gumbel")
    with pytest.raises(MTVAEError, match="240 codes"):
        make_quantizer("fsq", dim=4, num_codes=512)
    with pytest.raises(MTVAEError, match="decay"):
        VectorQuantizer(8, 2, decay=1.5)
    with pytest.raises(MTVAEError, match="at least 2 codes"):
        VectorQuantizer(1, 2)
    with pytest.raises(MTVAEError, match="FSQ levels"):
        FSQ(3, levels=(8, 1))
    with pytest.raises(MTVAEError, match="expected encoder outputs"):
        VectorQuantizer(8, 2)(torch.randn(2, 3, 4, 4))
    with pytest.raises(MTVAEError, match="no 'y'"):
        VQVAE(num_codes=8, channels=4, n_classes=10).loss_terms({"x": torch.zeros(2, 1, 28, 28)})


def _tiny_images(n=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    proto = (torch.rand(4, 1, 28, 28, generator=gen) > 0.7).float()
    y = torch.arange(n) % 4
    x = torch.bernoulli(0.05 + 0.9 * proto[y], generator=gen)
    split = Split({"x": x, "y": y})
    return Dataset("tiny", split, split, split, x_shape=(1, 28, 28), n_classes=4)


@pytest.mark.parametrize("preset,combiner", [("ema-restart", "sum"), ("plain", "sum"),
                                             ("fsq", "sum"), ("ema-restart", "pcgrad")])
def test_training_a_few_steps_is_finite_and_deterministic(preset, combiner):
    data = _tiny_images()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = VQVAE(quantizer=preset, num_codes=None if preset == "fsq" else 16,
                      channels=8, n_classes=4 if combiner != "sum" else None)
        res = fit(model, data, epochs=3, batch_size=40, seed=3, device="cpu",
                  combiner=combiner, progress="none")
        assert all(math.isfinite(v) for row in res.history for v in row.values())
        results.append([row["loss"] for row in res.history])
    assert results[0] == results[1]
    assert results[0][-1] < results[0][0]


def test_codebook_usage_and_class_scores_on_known_inputs():
    class Fixed(torch.nn.Module):
        def codes(self, x):
            return x[:, 0, :2, :2].long()  # the first 2x2 pixels are the codes

    x = torch.zeros(3, 1, 4, 4)
    x[0, 0, :2, :2] = torch.tensor([[0, 1], [1, 2]])
    usage = M.codebook_usage(Fixed(), Split({"x": x}), num_codes=8, transform=False)
    assert usage["codes_used"] == 3 and usage["fraction_used"] == 3 / 8
    p = torch.tensor([9, 2, 1, 0, 0, 0, 0, 0]) / 12
    assert usage["perplexity"] == pytest.approx(math.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    scores = M.class_scores(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]]))
    assert scores["confidence"] == pytest.approx(0.75)
    assert scores["class_entropy_bits"] == pytest.approx(1.0)


def test_grid_vae_shares_the_vqvae_networks():
    torch.manual_seed(0)
    vae = VAE((1, 28, 28), 49 * 4, arch="grid")
    vq = VQVAE(num_codes=8, code_dim=4)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (5, 196) and (scale > 0).all()
    assert vae.reconstruct(x).shape == x.shape and vae.sample(2).shape == (2, 1, 28, 28)
    n_vae = sum(p.numel() for p in vae.decoder.parameters())
    assert n_vae == sum(p.numel() for p in vq.decoder.parameters())
    # the encoder differs only in its last 1x1 convolution (2 x 4 channels instead of 4)
    n_enc = sum(p.numel() for p in vae.encoder.parameters())
    assert n_enc - sum(p.numel() for p in vq.encoder.parameters()) == 64 * 4 + 4
    # position (c, i, j) of the location grid is latent dimension c * 49 + 7 i + j
    h = vae.encoder[0](x)
    torch.testing.assert_close(loc.reshape(5, 4, 7, 7), h[:, :4])
    with pytest.raises(MTVAEError, match="multiple of 49"):
        VAE((1, 28, 28), 50, arch="grid")


def test_capacity_vae_penalises_distance_from_the_target_rate():
    torch.manual_seed(0)
    model = CapacityVAE((1, 8, 8), 3, capacity=5.0, gamma=2.0, hidden=(16,))
    terms = model.loss_terms({"x": torch.bernoulli(torch.full((10, 1, 8, 8), 0.3))})
    kl = terms.stats["kl"]
    torch.testing.assert_close(terms.regularizers["kl"], 2.0 * (kl - 5.0).abs())
    with pytest.raises(MTVAEError, match="not beta"):
        CapacityVAE((1, 8, 8), 3, capacity=5.0, beta=2.0)


def test_chapter_2_profiles():
    from mtvae.profiles import get_profile, settings_table

    smoke, full = get_profile("smoke").vq, get_profile("full").vq
    assert len(full.seeds) >= 5, "the headline comparison needs at least five seeds"
    assert smoke.epochs < full.epochs and set(smoke.remedies) <= set(PRESETS)
    assert set(full.remedies) <= set(PRESETS) and full.num_codes == 512
    table = settings_table("vq")
    assert table.loc["seeds", "full"] == "0, 1, 2, 3, 4"
    with pytest.raises(MTVAEError, match="valid studies: vae, vq"):
        settings_table("vqvae")
