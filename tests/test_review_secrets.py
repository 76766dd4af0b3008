"""Secrets: each provider's key shape, one finding per span, documentation placeholders pass."""

from __future__ import annotations

from distill.review.chain import check_texts
from distill.review.policy import load_policy


KEY = "Zq8Xv4Lp2Mn6Bt9Rw1Ys5Kd3Hf7Jg0Ca2Eb4Ni6O"


def codes(text):
    (verdict,) = check_texts([text], load_policy("general"))
    return [f.code for f in verdict.reasons]


def test_anthropic_key_is_not_also_reported_as_openai():
    assert codes(f"The key sk-ant-api03-{KEY} is here.") == ["secrets.anthropic_key"]
    assert codes(f"The key sk-proj-{KEY} is here.") == ["secrets.openai_key"]


def test_secrets_are_rejected_with_the_key_located():
    (verdict,) = check_texts([f"Use ghp_{KEY[:36]} to clone."], load_policy("general"))
    assert verdict.decision == "reject" and verdict.codes == ["secrets.github_token"]
    assert verdict.reasons[0].span == (4, 44)


def test_placeholders_pass():
    assert codes("The docs use AKIAIOSFODNN7EXAMPLE as the sample key.") == []
    assert codes("Connect to mysql://root:${DB_PASSWORD}@localhost/app when ready.") == []
    assert codes("Connect to redis://default:password@localhost:6379 for tests.") == []


def test_secrets_in_command_lines_url_paths_and_env_names():
    assert codes("curl -u deploy:Vx9#mQ2!kL7p https://artifacts.acme.io/upload") == ["secrets.command_password"]
    assert codes("mysql -u root -pH8k2Lq9Zx4 shop_db") == ["secrets.command_password"]
    assert codes("hook: https://chat.acme.io/hooks/xq7k9m2p4r6t8v1w3y5z0a2b4c") == ["secrets.webhook_url"]
    assert codes("NEW_RELIC_LICENSE_KEY=eu01xx4f8a2c9e1b7d4f6a0c5e9b2d7a1fNRAL") == ["secrets.assignment"]
    assert codes("curl -H \"Authorization: Bearer $TOKEN\" https://api.github.com/user") == []
    assert codes("API_KEY=changeme  # replace before deploying") == []
