"""The HRM core and HRMQValueNet on their own: shapes, the one-step gradient, carry vs reset,
diagnostics, determinism and input errors."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules.utils import get_primers_from_module

from hrm_torchrl import HRMConfig, HRMQValueNet
from hrm_torchrl.hrm import Block

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2, segments=3)


def tiny(**overrides):
    return HRMConfig.cpu(**{**TINY, **overrides})


def make_td(net, batch_shape=(4,), is_init=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = net.config
    return TensorDict(
        {
            "observation": torch.randint(0, 128, (*batch_shape, cfg.seq_len), generator=gen).to(
                torch.uint8
            ),
            "z_H": torch.randn(*batch_shape, *net.state_shape, generator=gen),
            "z_L": torch.randn(*batch_shape, *net.state_shape, generator=gen),
            "is_init": torch.full((*batch_shape, 1), is_init),
        },
        batch_size=batch_shape,
    )


def test_paper_preset_block_parameters():
    net = HRMQValueNet(HRMConfig.paper())
    blocks = [m for m in net.modules() if isinstance(m, Block)]
    assert len(blocks) == 8
    assert {sum(p.numel() for p in b.parameters()) for b in blocks} == {65_536}
    assert net.core.block_parameter_count() == 524_288
    assert HRMConfig.paper().mlp_hidden == 256


@pytest.mark.parametrize("patch, positions", [(1, 122), (2, 37)])  # 121 cells or 6x6 patches, + readout
@pytest.mark.parametrize("carry_state", ["token", "full"])
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_shapes_and_dtypes(batch_shape, carry_state, patch, positions):
    net = HRMQValueNet(tiny(patch=patch), n_actions=5, carry_state=carry_state)
    td = net(make_td(net, batch_shape))
    assert td["action_value"].shape == (*batch_shape, 5)
    assert td["action_value"].dtype == torch.float32
    expected = (16,) if carry_state == "token" else (positions, 16)
    assert net.state_shape == expected
    for key in ("z_H", "z_L"):
        assert td["next", key].shape == (*batch_shape, *expected)
        assert td["next", key].dtype == torch.float32
    assert torch.isfinite(td["action_value"]).all()


def test_token_carry_writes_the_readout_state():
    net = HRMQValueNet(tiny(), carry_state="token")
    full = HRMQValueNet(tiny(), carry_state="full")
    full.load_state_dict(net.state_dict())
    td_token = net(make_td(net))
    td_full = full(make_td(full))
    torch.testing.assert_close(td_token["next", "z_H"], td_full["next", "z_H"][:, 0])
    torch.testing.assert_close(td_token["action_value"], td_full["action_value"])


def _count_grad_block_passes(net, td):
    passes = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: passes.append(out.requires_grad))
        for m in net.modules()
        if isinstance(m, Block)
    ]
    net(td)
    for h in hooks:
        h.remove()
    return sum(passes), len(passes)


def test_one_step_gradient():
    cfg = tiny(H_layers=2, L_layers=3, gradient="one_step")
    net = HRMQValueNet(cfg, carry="carry")
    td = make_td(net, is_init=False)
    td["z_H"].requires_grad_(True)
    td["z_L"].requires_grad_(True)
    with_grad, total = _count_grad_block_passes(net, td)
    # 3 segments x 2 H cycles x (2 L cycles x 3 L layers + 2 H layers) block passes in all...
    assert total == 3 * 2 * (2 * 3 + 2)
    # ...of which only the last L update (3 blocks) and last H update (2 blocks) keep gradient.
    assert with_grad == 3 + 2
    td["action_value"].sum().backward()
    for name, p in net.core.H_level.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in net.core.L_level.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert net.core.readout.grad is not None
    assert td["z_H"].grad is None and td["z_L"].grad is None
    assert not td["next", "z_H"].requires_grad and not td["next", "z_L"].requires_grad
    assert td["next", "z_H"].grad_fn is None


def test_full_gradient_reaches_every_block_pass():
    cfg = tiny(H_layers=2, L_layers=3)  # the cpu preset's gradient
    net = HRMQValueNet(cfg, carry="carry")
    td = make_td(net, is_init=False)
    td["z_H"].requires_grad_(True)
    with_grad, total = _count_grad_block_passes(net, td)
    assert with_grad == total == 3 * 2 * (2 * 3 + 2)
    td["action_value"].sum().backward()
    assert td["z_H"].grad is None  # the carried-in state stays detached: truncated at the step
    assert td["next", "z_H"].grad_fn is None
    # the exact gradient differs from the one-step one on the same weights and inputs
    one_step = HRMQValueNet(tiny(H_layers=2, L_layers=3, gradient="one_step"), carry="carry")
    one_step.load_state_dict(net.state_dict())
    one_step(make_td(one_step, is_init=False))["action_value"].sum().backward()
    name, p = next(iter(net.core.L_level.named_parameters()))
    assert not torch.allclose(p.grad, dict(one_step.core.L_level.named_parameters())[name].grad)


def test_unknown_gradient_is_refused():
    with pytest.raises(ValueError, match="gradient"):
        tiny(gradient="bptt")


@pytest.mark.parametrize("carry_state", ["token", "full"])
def test_carry_uses_the_carried_state_and_reset_ignores_it(carry_state):
    torch.manual_seed(0)
    carry = HRMQValueNet(tiny(), carry="carry", carry_state=carry_state)
    reset = HRMQValueNet(tiny(), carry="reset", carry_state=carry_state)
    reset.load_state_dict(carry.state_dict())
    a, b = make_td(carry, is_init=False, seed=1), make_td(carry, is_init=False, seed=2)
    b["observation"] = a["observation"]  # same observation, other carried state
    q_carry = carry(a.clone())["action_value"], carry(b.clone())["action_value"]
    q_reset = reset(a.clone())["action_value"], reset(b.clone())["action_value"]
    assert not torch.allclose(q_carry[0], q_carry[1])
    torch.testing.assert_close(q_reset[0], q_reset[1])
    # is_init: the carried state is ignored and H_init/L_init used, as Reset Z does.
    a["is_init"][:] = True
    b["is_init"][:] = True
    torch.testing.assert_close(carry(a.clone())["action_value"], carry(b.clone())["action_value"])
    torch.testing.assert_close(carry(a.clone())["action_value"], q_reset[0])


def test_is_init_resets_per_row():
    net = HRMQValueNet(tiny())
    td = make_td(net, (4,), is_init=False)
    td["is_init"][:2] = True
    other = td.clone()
    other["z_H"] = torch.randn_like(other["z_H"])
    q1, q2 = net(td)["action_value"], net(other)["action_value"]
    torch.testing.assert_close(q1[:2], q2[:2])
    assert not torch.allclose(q1[2:], q2[2:])


def test_reset_mode_needs_no_carried_keys():
    net = HRMQValueNet(tiny(), carry="reset")
    td = make_td(net).exclude("z_H", "z_L", "is_init")
    td = net(td)
    assert td["next", "z_H"].shape == (4, 16)


def test_seeded_determinism():
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = HRMQValueNet(tiny())
        outputs.append(net(make_td(net, is_init=False))["action_value"])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    net = HRMQValueNet(tiny())
    assert not torch.allclose(outputs[0], net(make_td(net, is_init=False))["action_value"])


def test_chunked_inference_matches_one_batch():
    net = HRMQValueNet(tiny())
    td = make_td(net, (10,), is_init=False)
    net.core.inference_chunk = 3
    with torch.no_grad():
        chunked = net(td.clone())
    net.core.inference_chunk = 64
    with torch.no_grad():
        whole = net(td.clone())
    torch.testing.assert_close(chunked["action_value"], whole["action_value"])
    torch.testing.assert_close(chunked["next", "z_L"], whole["next", "z_L"])


def test_diagnostics():
    net = HRMQValueNet(tiny(), diagnostics=False)
    td = net(make_td(net, (2, 3), is_init=False))
    assert "diagnostics" not in td.keys()
    net.diagnostics = True
    assert ("diagnostics", "mse_H") in net.out_keys
    td = net(make_td(net, (2, 3), is_init=False))
    diag = td["diagnostics"]
    assert diag["mse_H"].shape == diag["mse_L"].shape == (2, 3, 3)
    assert diag["q_segments"].shape == (2, 3, 3, 4)
    assert diag["q_carried"].shape == (2, 3, 4)
    assert (diag["mse_H"][..., -1] == 0).all() and (diag["mse_L"][..., -1] == 0).all()
    assert (diag["mse_H"][..., 0] > 0).all()
    torch.testing.assert_close(diag["q_segments"][..., -1, :], td["action_value"])
    # q_carried decodes the carried-in z_H (token mode: the readout vector itself).
    torch.testing.assert_close(diag["q_carried"], net.head(td["z_H"]))


def test_dueling_head_splits_value_and_centred_advantages():
    net = HRMQValueNet(tiny(), dueling=True)
    td = net(make_td(net, (2, 3), is_init=False))
    q, readout = td["action_value"], td["next", "z_H"]  # token mode: the vector Q is decoded from
    value, advantage = net.head.value(readout), net.head.advantage(readout)
    torch.testing.assert_close(q, value + advantage - advantage.mean(-1, keepdim=True))
    torch.testing.assert_close(q.mean(-1, keepdim=True), value)  # the state's value: the mean Q
    q[..., 0].sum().backward()  # both streams learn from one action's error
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())


def test_primer_is_found_and_has_the_carried_shapes():
    for carry_state, shape in (("token", (16,)), ("full", (37, 16))):  # the cpu preset's patches
        net = HRMQValueNet(tiny(), carry_state=carry_state)
        primer = get_primers_from_module(net)
        assert primer is not None
        assert set(primer.primers.keys()) == {"z_H", "z_L"}
        assert primer.primers["z_H"].shape == shape


def test_custom_keys():
    net = HRMQValueNet(
        tiny(),
        in_keys=["tokens", "hz", "lz", "is_init"],
        out_keys=["q", ("next", "hz"), ("next", "lz")],
    )
    td = make_td(net).rename_key_("observation", "tokens")
    td.rename_key_("z_H", "hz")
    td.rename_key_("z_L", "lz")
    td = net(td)
    assert td["q"].shape == (4, 4) and td["next", "hz"].shape == (4, 16)
    assert set(net.make_tensordict_primer().primers.keys()) == {"hz", "lz"}


def test_bfloat16_autocast_runs_on_cpu():
    net = HRMQValueNet(tiny(dtype="bfloat16"))
    td = net(make_td(net, is_init=False))
    assert td["action_value"].dtype == torch.float32
    assert td["next", "z_H"].dtype == torch.float32
    assert torch.isfinite(td["action_value"]).all()


def test_parameter_groups_split_the_readout_token():
    net = HRMQValueNet(tiny())
    model, embedding = net.param_groups(lr=1e-4, embedding_lr=1e-2, embedding_weight_decay=0.1)
    assert len(embedding["params"]) == 1 and embedding["params"][0] is net.core.readout
    assert (embedding["lr"], embedding["weight_decay"], model["lr"], model["weight_decay"]) == (
        1e-2, 0.1, 1e-4, 0.0)
    assert len(embedding["params"]) + len(model["params"]) == len(list(net.parameters()))


@pytest.mark.parametrize("positions", ["rope", "learned", "2d"])
def test_position_encodings_differ_by_position(positions):
    net = HRMQValueNet(tiny(positions=positions))
    td = make_td(net, (1,), is_init=True)
    swapped = td.clone()
    swapped["observation"] = td["observation"].flip(-1)
    q, q_swapped = net(td)["action_value"], net(swapped)["action_value"]
    assert not torch.allclose(q, q_swapped)


def test_a_patch_embeds_its_own_cells():
    net = HRMQValueNet(tiny(patch=2))
    tokens = make_td(net, (1,))["observation"].long()
    embed = lambda t: net.core.inject(net.encoder(t))  # noqa: E731
    x = embed(tokens)
    assert x.shape == (1, 37, 16)
    for row, col in ((0, 0), (1, 1), (4, 7), (10, 10)):  # (10, 10) sits in a padded patch
        changed = tokens.clone()
        changed[0, row * 11 + col] = (changed[0, row * 11 + col] + 1) % 128
        moved = (embed(changed) - x).abs().sum(-1)[0].nonzero().flatten().tolist()
        assert moved == [1 + (row // 2) * 6 + col // 2]  # position 0 is the readout token


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden=30, heads=4), "divisible by heads"),
        (dict(positions="alibi"), "unknown HRMConfig.positions"),
        (dict(segments=0), "segments must be a positive integer"),
        (dict(positions="2d", grid_shape=(10, 11)), "holds 110 cells"),
        (dict(dtype="float16"), "unknown HRMConfig.dtype"),
        (dict(patch=0), "patch must be a positive integer"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)
    with pytest.raises(ValueError, match="patch > 1 need grid_shape"):
        HRMConfig(patch=2)


def test_unknown_preset_and_modes_raise():
    with pytest.raises(ValueError, match="unknown HRM preset 'gpu'.*cpu.*paper"):
        HRMConfig.preset("gpu")
    with pytest.raises(ValueError, match="unknown carry mode 'keep'"):
        HRMQValueNet(tiny(), carry="keep")
    with pytest.raises(ValueError, match="unknown carry_state 'half'"):
        HRMQValueNet(tiny(), carry_state="half")
    with pytest.raises(ValueError, match="unknown HRMConfig fields"):
        HRMConfig.from_dict({"hiden": 3})


def test_bad_observations_raise():
    net = HRMQValueNet(tiny())
    td = make_td(net)
    bad = td.clone()
    bad["observation"] = td["observation"].long() + 128
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 128\)"):
        net(bad)
    bad = td.clone()
    bad["observation"] = -td["observation"].long() - 1
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 128\)"):
        net(bad)
    bad = td.clone().exclude("observation")
    bad["observation"] = torch.zeros(4, 100, dtype=torch.uint8)
    with pytest.raises(ValueError, match="must have 121 tokens"):
        net(bad)
    bad = td.clone()
    bad["observation"] = td["observation"].float()
    with pytest.raises(ValueError, match="integer tokens"):
        net(bad)


def test_missing_keys_raise():
    net = HRMQValueNet(tiny())
    td = make_td(net)
    with pytest.raises(ValueError, match="no 'observation' entry"):
        net(td.exclude("observation"))
    with pytest.raises(ValueError, match="no 'z_H' entry.*make_tensordict_primer"):
        net(td.exclude("z_H"))
    with pytest.raises(ValueError, match="no 'is_init' entry.*InitTracker"):
        net(td.exclude("is_init"))
    bad = td.clone().exclude("z_L")
    bad["z_L"] = torch.zeros(4, 17)
    with pytest.raises(ValueError, match="carried state 'z_L' must have shape"):
        net(bad)


@pytest.mark.parametrize("config", [tiny(), HRMConfig.paper(segments=1, H_layers=1, L_layers=1)])
def test_grids_read_as_their_rows(config):
    # the gymnasium mazes emit [11, 11] grids, make_env [121] tokens: the same Q-values
    net = HRMQValueNet(config)
    td = make_td(net, (2, 3), is_init=False)
    grid = td.clone()
    grid["observation"] = td["observation"].reshape(2, 3, 11, 11)
    torch.testing.assert_close(net(grid)["action_value"], net(td)["action_value"])
    grid["observation"] = td["observation"].reshape(2, 3, 11, 11)[..., :10]
    with pytest.raises(ValueError, match="must have 121 tokens"):
        net(grid)
