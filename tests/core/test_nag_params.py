"""NagParams' on/off rule: sigma_end at its maximum means off."""

from zimage_nodes.core.nag import NagParams


def test_sigma_end_one_is_off_even_on_the_first_step():
    assert NagParams(sigma_end=1.0).is_off
    assert not NagParams(sigma_end=1.0).active_at(1.0)
    assert NagParams(sigma_end=0.99).active_at(1.0) and not NagParams(sigma_end=0.99).active_at(0.98)
    assert NagParams(sigma_end=0.0).active_at(0.01)
    assert not NagParams(scale=1.0, sigma_end=0.0).active_at(1.0)
