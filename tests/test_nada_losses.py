import math

import torch

from nada_ops.nada.losses import directional_loss, global_loss, guarded_cosine


def test_directional_loss_zero_direction_is_guarded():
    e = torch.randn(2, 8)
    d = torch.nn.functional.normalize(torch.randn(8), dim=0)
    x = e.clone().requires_grad_(True)
    loss = directional_loss(x, e, d)      # identical generators at step 0: dI = 0
    assert torch.isfinite(loss) and abs(loss.item() - 1.0) < 1e-6
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_directional_loss_hand_computed():
    # train emb (3,4) -> unit (0.6,0.8); frozen emb (1,0) -> unit (1,0); dI = (-0.4, 0.8)
    train = torch.tensor([[3.0, 4.0]])
    frozen = torch.tensor([[2.0, 0.0]])
    d = torch.tensor([0.0, 1.0])
    expected = 1 - 0.8 / math.sqrt(0.4 ** 2 + 0.8 ** 2)
    assert abs(directional_loss(train, frozen, d).item() - expected) < 1e-6
    # batch mean
    train2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    frozen2 = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    # second: dI = (1,-1) -> cos with (0,1) = -1/sqrt2
    exp2 = (expected + (1 + 1 / math.sqrt(2))) / 2
    assert abs(directional_loss(train2, frozen2, d).item() - exp2) < 1e-6


def test_global_loss_and_cosine():
    assert abs(global_loss(torch.tensor([[0.0, 2.0]]), torch.tensor([0.0, 1.0])).item()) < 1e-7
    assert guarded_cosine(torch.zeros(3), torch.ones(3)).item() == 0.0


def test_rounding_noise_at_step0_does_not_steer():
    """dI made only of float32 rounding noise gives loss ~1 and a gradient along dT."""
    torch.manual_seed(0)
    e = torch.randn(2, 16)
    d = torch.nn.functional.normalize(torch.randn(16), dim=0)
    x = (e + torch.randn(2, 16) * 1e-7 * e.norm()).requires_grad_(True)
    loss = directional_loss(x, e, d)
    assert abs(loss.item() - 1.0) < 0.02
    loss.backward()
    # the gradient pushes each (normalised) embedding along +dT
    g = -x.grad
    cos = torch.nn.functional.cosine_similarity(g - (g * torch.nn.functional.normalize(x, dim=1)).sum(1, keepdim=True)
                                                * torch.nn.functional.normalize(x, dim=1), d[None], dim=1)
    assert (cos > 0.9).all()
