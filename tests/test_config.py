"""The TOML configuration file: a full file decodes into the Structs; unknown keys, wrong types, invalid
values, a missing file and broken TOML are ConfigErrors naming the key; env tokens replace the file's."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from smcs import Policy
from smcs.config import AuthConfig, BankConfig, Config, ConfigError, ExpiringToken, ServerConfig, TLSConfig, load_config

FULL = """
[server]
host = "0.0.0.0"
port = 6000
max_concurrent_rpcs = 12
admission_wait_s = 0.5
max_message_bytes = 1048576
max_question_chars = 500
workers = 3
reload_interval_s = 2.5

[server.tls]
cert_file = "/etc/smcs/server.pem"
key_file = "/etc/smcs/server.key"
client_ca_file = "/etc/smcs/ca.pem"

[auth]
query_tokens = ["q1", "q2"]
admin_tokens = ["a1"]

[bank]
path = "/srv/smcs/bank"

[policy]
k = 5
n_base = 100
gamma = 0.9
k_drop = 2
n = 4
lam = 0.5
aggregator = "model-03"
threads = 2
"""


def _write(tmp_path, text: str):
    path = tmp_path / "smcs.toml"
    path.write_text(text)
    return path


def test_a_full_file_decodes_into_the_structs(tmp_path):
    config = load_config(_write(tmp_path, FULL), environ={})
    assert config == Config(
        server=ServerConfig(
            host="0.0.0.0",
            port=6000,
            max_concurrent_rpcs=12,
            admission_wait_s=0.5,
            max_message_bytes=1048576,
            max_question_chars=500,
            workers=3,
            reload_interval_s=2.5,
            tls=TLSConfig(cert_file="/etc/smcs/server.pem", key_file="/etc/smcs/server.key", client_ca_file="/etc/smcs/ca.pem"),
        ),
        auth=AuthConfig(query_tokens=["q1", "q2"], admin_tokens=["a1"]),
        bank=BankConfig(path="/srv/smcs/bank"),
        policy=Policy(k=5, n_base=100, gamma=0.9, k_drop=2, n=4, lam=0.5, aggregator="model-03", threads=2),
    )
    assert config.auth.enabled


def test_every_table_is_optional(tmp_path):
    assert load_config(_write(tmp_path, ""), environ={}) == Config()
    assert load_config(None, environ={}) == Config()
    partial = load_config(_write(tmp_path, "[server]\nport = 0\n[policy]\nk = 3\n"), environ={})
    assert partial.server == ServerConfig(port=0) and partial.policy == Policy(k=3)
    assert partial.bank is None and partial.server.tls is None and not partial.auth.enabled
    tls = load_config(_write(tmp_path, '[server.tls]\ncert_file = "c"\nkey_file = "k"\n'), environ={})
    assert tls.server.tls == TLSConfig(cert_file="c", key_file="k", client_ca_file=None)


def test_defaults_are_documented_values():
    server = ServerConfig()
    assert (server.host, server.port, server.reload_interval_s, server.tls) == ("127.0.0.1", 50051, 0.0, None)
    assert Config().policy == Policy()


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("prot = 1\n", ["prot"]),
        ("[server]\nprot = 1\n", ["prot", "$.server"]),
        ("[auth]\nquery_token = ['x']\n", ["query_token", "$.auth"]),
        ("[bank]\npath = 'b'\npaht = 'c'\n", ["paht", "$.bank"]),
        ("[policy]\nkk = 3\n", ["kk", "$.policy"]),
        ("[server.tls]\ncert_file = 'c'\nkey_file = 'k'\nca = 'x'\n", ["ca", "$.server.tls"]),
        ("[servers]\nport = 1\n", ["servers"]),
    ],
)
def test_unknown_keys_are_refused_by_name(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    message = str(info.value)
    assert "unknown field" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "text, path",
    [
        ('[server]\nport = "50051"\n', "$.server.port"),
        ("[server]\nhost = 127\n", "$.server.host"),
        ("[server]\nworkers = 2.5\n", "$.server.workers"),
        ("[server]\nreload_interval_s = 'often'\n", "$.server.reload_interval_s"),
        ("[server]\ntls = 'on'\n", "$.server.tls"),
        ('[auth]\nquery_tokens = "abc"\n', "$.auth.query_tokens"),
        ("[auth]\nadmin_tokens = [1, 2]\n", "$.auth.admin_tokens[0]"),
        ("[bank]\npath = 3\n", "$.bank.path"),
        ("[bank]\n", "$.bank"),  # path is required
        ("[policy]\nk = 'five'\n", "$.policy.k"),
        ("[policy]\ngamma = true\n", "$.policy.gamma"),
        ("server = 1\n", "$.server"),
    ],
)
def test_wrong_types_name_the_key_path(tmp_path, text, path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert f"`{path}`" in str(info.value)
    assert str(tmp_path / "smcs.toml") in str(info.value)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[server]\nport = 70000\n", ["port", "70000", "$.server"]),
        ("[server]\nport = -1\n", ["port", "$.server"]),
        ("[server]\nworkers = 0\n", ["workers", "$.server"]),
        ("[server]\nmax_concurrent_rpcs = 0\n", ["max_concurrent_rpcs", "$.server"]),
        ("[server]\nadmission_wait_s = -0.5\n", ["admission_wait_s must be in [0, 60]", "$.server"]),
        ("[server]\nmax_message_bytes = -5\n", ["max_message_bytes", "$.server"]),
        ("[server]\nmax_question_chars = 0\n", ["max_question_chars", "$.server"]),
        ("[server]\nreload_interval_s = -1.0\n", ["reload_interval_s", "$.server"]),
        ("[server]\ninline_route_bytes = -1\n", ["inline_route_bytes", "$.server"]),
        ("[policy]\ngamma = 2\n", ["gamma", "$.policy"]),
        ("[policy]\nk = 0\n", ["k must", "$.policy"]),
        ("[policy]\nk = 3\nk_drop = 3\n", ["k_drop", "$.policy"]),
        ("[policy]\nlam = nan\n", ["lam", "$.policy"]),
        ("[policy]\naggregator = ''\n", ["aggregator", "$.policy"]),
    ],
)
def test_invalid_values_name_the_field(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_boundary_values_are_accepted(tmp_path):
    config = load_config(_write(tmp_path, "[server]\nport = 65535\nworkers = 1\nreload_interval_s = 0.0\ninline_route_bytes = 0\n[policy]\ngamma = 1.0\nk_drop = 0\n"), environ={})
    assert (config.server.port, config.server.workers, config.policy.gamma, config.policy.k_drop) == (65535, 1, 1.0, 0)
    assert config.server.inline_route_bytes == 0
    assert load_config(_write(tmp_path, "[server]\nport = 0\n[policy]\ngamma = 0.0\n"), environ={}).server.port == 0


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", environ={})
    assert "nope.toml" in str(info.value)
    with pytest.raises(ConfigError):
        load_config(tmp_path, environ={})  # a directory is not a file


@pytest.mark.parametrize("text", ["[server\nport = 1\n", "port = \n", "[server]\nport = 1\nport = 2\n", "\x00\x01binary"])
def test_invalid_toml_is_a_config_error(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert "smcs.toml" in str(info.value)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "smcs.toml"
    path.write_bytes(b"\xff\xfe[server]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "smcs.toml" in str(info.value)


def test_tokens_may_carry_an_expiry(tmp_path):
    text = (
        "[auth]\n"
        'query_tokens = ["plain", { token = "until-2027", expires = 2027-01-01T00:00:00Z }]\n'
        'admin_tokens = [{ token = "until-noon", expires = 2030-06-01T12:00:00+02:00 }, '
        '{ token = "as-text", expires = "2031-01-01T00:00:00Z" }]\n'
    )
    auth = load_config(_write(tmp_path, text), environ={}).auth
    assert auth == AuthConfig(
        query_tokens=["plain", ExpiringToken(token="until-2027", expires=datetime(2027, 1, 1, tzinfo=timezone.utc))],
        admin_tokens=[
            ExpiringToken(token="until-noon", expires=datetime(2030, 6, 1, 10, tzinfo=timezone.utc)),
            ExpiringToken(token="as-text", expires=datetime(2031, 1, 1, tzinfo=timezone.utc)),
        ],
    )
    assert auth.admin_tokens[0].expires.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]
    # the environment's tokens are plain strings and replace the file's, expiries and all
    assert load_config(_write(tmp_path, text), environ={"SMCS_QUERY_TOKENS": "env"}).auth.query_tokens == ["env"]


@pytest.mark.parametrize(
    "entry, fragments",
    [
        ('{ token = "t", expires = 2027-01-01T00:00:00 }', ["UTC offset", "expires", "$.auth.query_tokens[1]"]),
        ('{ token = "t", expires = "2027-01-01T00:00:00" }', ["UTC offset", "expires", "$.auth.query_tokens[1]"]),
        ('{ token = "t", expires = 2027-01-01 }', ["`date`", "$.auth.query_tokens[1].expires"]),
        ('{ token = "t", expires = 12:00:00 }', ["`time`", "$.auth.query_tokens[1].expires"]),
        ('{ token = "t", expires = 1893456000 }', ["`int`", "$.auth.query_tokens[1].expires"]),
        ('{ token = "t", expires = "next year" }', ["datetime", "$.auth.query_tokens[1].expires"]),
        ('{ token = "t" }', ["expires", "$.auth.query_tokens[1]"]),
        ("{ expires = 2027-01-01T00:00:00Z }", ["token", "$.auth.query_tokens[1]"]),
        ('{ token = "t", expires = 2027-01-01T00:00:00Z, scope = "admin" }', ["scope", "$.auth.query_tokens[1]"]),
        ('{ token = 7, expires = 2027-01-01T00:00:00Z }', ["`int`", "$.auth.query_tokens[1].token"]),
    ],
)
def test_bad_expiring_tokens_name_the_key(tmp_path, entry, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, f'[auth]\nquery_tokens = ["plain", {entry}]\n'), environ={})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_an_expiry_without_offset_is_refused_in_code_too():
    with pytest.raises(ValueError, match="expires must have a UTC offset"):
        ExpiringToken(token="t", expires=datetime(2027, 1, 1))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_env_tokens_override_the_file(tmp_path):
    path = _write(tmp_path, FULL)
    config = load_config(path, environ={"SMCS_QUERY_TOKENS": "env-q", "SMCS_ADMIN_TOKENS": "env-a1,env-a2"})
    assert config.auth == AuthConfig(query_tokens=["env-q"], admin_tokens=["env-a1", "env-a2"])
    assert config.server == load_config(path, environ={}).server  # nothing else changes
    assert load_config(path, environ={"SMCS_ADMIN_TOKENS": "x"}).auth.query_tokens == ["q1", "q2"]
    assert load_config(path, environ={"OTHER": "x"}).auth == AuthConfig(query_tokens=["q1", "q2"], admin_tokens=["a1"])


def test_environ_defaults_to_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SMCS_QUERY_TOKENS", "from-os")
    monkeypatch.delenv("SMCS_ADMIN_TOKENS", raising=False)
    assert load_config(None).auth == AuthConfig(query_tokens=["from-os"], admin_tokens=[])


def test_the_answer_strategy_and_its_options_are_checked_at_load(tmp_path):
    from smcs.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[answer]\nstrategy = "moa-lite"\nstrategy_options = { proposers = 2 }\n')
    answer = load_config(path).answer
    assert answer.strategy == "moa-lite" and answer.strategy_options == {"proposers": 2}
    path.write_text('[answer]\nstrategy = "moe"\n')
    with pytest.raises(ConfigError, match=r"unknown strategy 'moe'.*\$\.answer"):
        load_config(path)
    path.write_text('[answer]\nstrategy = "moa"\nstrategy_options = { layers = 1 }\n')
    with pytest.raises(ConfigError, match="option layers"):
        load_config(path)
