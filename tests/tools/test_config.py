"""TOML configuration: the embedded default, a full file, and errors naming file, key and reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from sanlab.tools.config import ConfigError, default_config, load_config, parse_size

FULL = """
data_dir = "dd"
[server]
portals = ["127.0.0.1:3261", "[::1]:3262"]
nop_interval = 5
[[targets]]
name = "iqn.2026-11.org.sanlab:t1"
alias = "t1"
initiators = ["iqn.1994-05.com.redhat:host1"]
[targets.chap]
username = "u1"
secret = "twelve-bytes!"
[targets.chap.initiators."iqn.1994-05.com.redhat:host1"]
username = "host1"
secret = "host1-secret-12"
[targets.mutual_chap]
username = "t1"
secret = "target-secret-12"
[[targets.luns]]
lun = 0
size = "64MiB"
[[targets.luns]]
lun = 3
size = 1048576
file = "/abs/x.img"
block_size = 4096
readonly = true
"""


def _load(tmp_path: Path, text: str) -> object:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


def test_default_config(tmp_path: Path) -> None:
    cfg = default_config(tmp_path)
    assert cfg.server.portals == [("0.0.0.0", 3260)]
    (t,) = cfg.targets
    assert t.name == "iqn.2026-11.org.sanlab:array0" and t.chap is None and t.initiators is None
    (lun,) = t.luns
    assert (lun.lun, lun.size, lun.file) == (0, 1 << 30, tmp_path / "array0-lun0.img")
    assert load_config(None).data_dir == Path("sanlab-data")


def test_full_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, FULL)
    assert cfg.data_dir == Path("dd")  # type: ignore[attr-defined]
    assert cfg.server.portals == [("127.0.0.1", 3261), ("::1", 3262)]  # type: ignore[attr-defined]
    (t,) = cfg.targets  # type: ignore[attr-defined]
    assert t.initiators == ["iqn.1994-05.com.redhat:host1"]
    assert t.chap.username == "u1" and t.mutual_chap.secret == "target-secret-12"
    assert t.initiator_chap["iqn.1994-05.com.redhat:host1"].username == "host1"
    assert [(l.lun, l.size, l.block_size, l.readonly) for l in t.luns] == [
        (0, 64 << 20, 512, False), (3, 1 << 20, 4096, True)]
    assert t.luns[0].file == Path("dd") / "t1-lun0.img" and t.luns[1].file == Path("/abs/x.img")


@pytest.mark.parametrize("text,key,reason", [
    ("[[targets]]\nname='iqn.2026-11.x:a'\nbogus=1\n", "targets[0].bogus", "unknown key"),
    ("[[targets]]\nname='nonsense'\n", "targets[0].name", "not an iSCSI name"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[targets.chap]\nusername='u'\nsecret='short'\n",
     "targets[0].chap.secret", "at least 12 bytes"),
    ("[server]\nportals=['localhost']\n[[targets]]\nname='iqn.2026-11.x:a'\n", "server.portals[0]", "HOST:PORT"),
    ("[server]\nhttp='localhost'\n[[targets]]\nname='iqn.2026-11.x:a'\n", "server.http", "HOST:PORT"),
    ("[server]\nhttp=8080\n[[targets]]\nname='iqn.2026-11.x:a'\n", "server.http", "must be str"),
    ("[server]\nmax_sessions_per_target=0\n[[targets]]\nname='iqn.2026-11.x:a'\n",
     "server.max_sessions_per_target", "must be 1..65535"),
    ("[server]\nmax_sessions_per_initiator='many'\n[[targets]]\nname='iqn.2026-11.x:a'\n",
     "server.max_sessions_per_initiator", "must be int"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=0\nsize='1000'\nblock_size=4096\n",
     "targets[0].luns[0].size", "multiple of the block size"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=1\n[[targets.luns]]\nlun=1\n",
     "targets[0].luns[1].lun", "duplicate LUN"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=0\nphysical_block_size=1536\n",
     "targets[0].luns[0].physical_block_size", "times a power of two"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=0\nsanitize_rate='fast'\n",
     "targets[0].luns[0].sanitize_rate", "not a size"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=-1\n", "targets[0].luns[0].lun",
     "LUN -1 is out of range: LUNs are 0..16383"),
    ("[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=16384\n", "targets[0].luns[0].lun",
     "LUNs are 0..16383 (peripheral device addressing 0-255, flat space addressing 256-16383"),
    ("[[external_volumes]]\nname='e'\nportal='127.0.0.1:3260'\ntarget='iqn.2026-11.x:b'\nlun=99999\n"
     "[[targets]]\nname='iqn.2026-11.x:a'\n", "external_volumes[0].lun", "LUN 99999 is out of range"),
    ("x = [\n", "<syntax>", ""),
    ("", "targets", "at least one"),
])
def test_errors_name_file_key_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    assert exc.value.source == str(tmp_path / "c.toml")
    assert exc.value.key == key
    assert reason in exc.value.reason
    assert str(tmp_path / "c.toml") in str(exc.value) and key in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "no such file" in str(exc.value)


@pytest.mark.parametrize("text,n", [("1GiB", 1 << 30), ("512M", 512 << 20), ("4096", 4096), (10, 10), ("2T", 2 << 40)])
def test_parse_size(text: object, n: int) -> None:
    assert parse_size(text, "s", "k") == n


def test_raid_group_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
data_dir = "dd"
[[raid_groups]]
name = "rg0"
level = 6
drives = ["a.img", "b.img", "c.img", "/abs/d.img"]
drive_size = "32MiB"
[[targets]]
name = "iqn.2026-11.org.sanlab:t1"
[[targets.luns]]
lun = 0
raid_group = "rg0"
""")
    (rg,) = cfg.raid_groups  # type: ignore[attr-defined]
    assert (rg.level, rg.drive_size, rg.stripe_size) == (6, 32 << 20, 64 << 10)
    assert rg.drives[0] == Path("dd") / "a.img" and rg.drives[3] == Path("/abs/d.img")
    assert cfg.targets[0].luns[0].raid_group == "rg0" and cfg.targets[0].luns[0].size == 0  # type: ignore


@pytest.mark.parametrize("text,key", [
    ("[[raid_groups]]\nname='r'\nlevel=5\ndrives=['a','b']\n", "raid_groups[0].drives"),
    ("[[raid_groups]]\nname='r'\nlevel=4\ndrives=['a','b','c']\n", "raid_groups[0].level"),
    ("[[raid_groups]]\nname='r'\nlevel=10\ndrives=['a','b','c','d','e']\n", "raid_groups[0].drives"),
])
def test_raid_group_errors(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text + "[[targets]]\nname='iqn.2026-11.x:a'\n")
    assert exc.value.key == key


def test_lun_on_unknown_group(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, "[[targets]]\nname='iqn.2026-11.x:a'\n[[targets.luns]]\nlun=0\nraid_group='nope'\n")
    assert exc.value.key == "targets[0].luns[0].raid_group"


def test_a_file_is_one_drive_or_one_lun_however_it_is_spelled(tmp_path: Path) -> None:
    """Issue 12 item 2, the TOML side: files are compared by device and inode (or real path), not spelling."""
    import os

    dd = tmp_path / "dd"
    dd.mkdir()
    (dd / "a.img").write_bytes(b"")
    os.link(dd / "a.img", dd / "hard.img")
    os.symlink(dd / "a.img", dd / "soft.img")
    os.symlink(dd, tmp_path / "alias")
    head = f'data_dir = "{dd}"\n'
    tail = "[[targets]]\nname = 'iqn.2026-11.x:a'\n"

    def group(name: str, *drives: str) -> str:
        return f"[[raid_groups]]\nname = '{name}'\nlevel = 5\ndrives = {list(drives)!r}\n"

    cases = [
        (group("r0", "a.img", "hard.img", "c.img"), "raid_groups[0].drives[1]", "same file as raid_groups[0].drives[0]"),
        (group("r0", "a.img", "b.img", "soft.img"), "raid_groups[0].drives[2]", "a drive appears twice"),
        (group("r0", "a.img", "b.img", "c.img") + group("r1", "x.img", "y.img", str(tmp_path / "alias" / "b.img")),
         "raid_groups[1].drives[2]", "same file as raid_groups[0].drives[1]"),
        (group("r0", "a.img", "b.img", "c.img") + tail + "[[targets.luns]]\nlun = 0\nfile = 'hard.img'\n",
         "targets[0].luns[0].file", "is raid_groups[0].drives[0], a RAID drive"),
    ]
    for text, key, reason in cases:
        with pytest.raises(ConfigError) as exc:
            _load(tmp_path, head + text + ("" if "[[targets]]" in text else tail))
        assert (exc.value.key, reason in exc.value.reason) == (key, True), (text, str(exc.value))
    _load(tmp_path, head + group("r0", "a.img", "b.img", "c.img") + group("r1", "x.img", "y.img", "z.img") + tail)


REMOTES = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array-a"
[[remotes]]
name = "array-b"
portals = ["127.0.0.2:3260", "[::1]:3261"]
target = "iqn.2026-11.org.sanlab:array-b"
chap_user = "array-a"
chap_secret = "a-to-b-secret-12"
mutual_user = "array-b"
mutual_secret = "b-to-a-secret-12"
[[remotes]]
name = "array-c"
portal = "127.0.0.3:3260"
target = "iqn.2026-11.org.sanlab:array-c"
"""


def test_remotes(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(REMOTES)
    cfg = load_config(tmp_path / "c.toml")
    b, c = cfg.remotes
    assert (b.name, b.portals, b.target) == ("array-b", [("127.0.0.2", 3260), ("::1", 3261)],
                                             "iqn.2026-11.org.sanlab:array-b")
    assert b.chap is not None and (b.chap.username, b.chap.secret) == ("array-a", "a-to-b-secret-12")
    assert b.mutual_chap is not None and (b.mutual_chap.username, b.mutual_chap.secret) == \
        ("array-b", "b-to-a-secret-12")
    assert (c.name, c.portals, c.chap, c.mutual_chap) == ("array-c", [("127.0.0.3", 3260)], None, None)
    # A repr of the config (a log line, a traceback) never shows a secret.
    assert "secret-12" not in repr(cfg) and "array-a" in repr(b)
    assert load_config(None).remotes == []
    assert (b.http, c.http) == (None, None)


def test_status_page_addresses(tmp_path: Path) -> None:
    """``server.http`` turns the status page on (tools/status_http.py); a remote's ``http`` is where
    /topology reads that peer's status."""
    cfg = _load(tmp_path, "[server]\nhttp='127.0.0.1:8080'\n" + _T + _R + "portal='127.0.0.2:3260'\n"
                "http='127.0.0.2:8080'\n")
    assert cfg.server.http == ("127.0.0.1", 8080) and cfg.remotes[0].http == ("127.0.0.2", 8080)
    assert _load(tmp_path, _T).server.http is None  # off unless asked for


_T = "[[targets]]\nname='iqn.2026-11.x:a'\n"
_R = "[[remotes]]\nname='b'\ntarget='iqn.2026-11.x:b'\n"


@pytest.mark.parametrize("text,key,reason", [
    (_T + "[[remotes]]\nportal='127.0.0.2:3260'\ntarget='iqn.2026-11.x:b'\n", "remotes[0].name", "missing"),
    (_T + "[[remotes]]\nname='a b'\nportal='127.0.0.2:3260'\ntarget='iqn.2026-11.x:b'\n", "remotes[0].name",
     "not a remote name"),
    (_T + _R, "remotes[0].portals", "missing"),
    (_T + _R + "portals=[]\n", "remotes[0].portals", "at least one portal"),
    (_T + _R + "portal='127.0.0.2'\n", "remotes[0].portal", "is not HOST:PORT"),
    (_T + _R + "portals=['127.0.0.2:3260', 'x:y']\n", "remotes[0].portals[1]", "is not HOST:PORT"),
    (_T + _R + "portal='127.0.0.2:3260'\nportals=['127.0.0.2:3260']\n", "remotes[0].portal", "not both"),
    (_T + "[[remotes]]\nname='b'\nportal='127.0.0.2:3260'\n", "remotes[0].target", "missing"),
    (_T + "[[remotes]]\nname='b'\nportal='127.0.0.2:3260'\ntarget='array-b'\n", "remotes[0].target",
     "not an iSCSI name"),
    (_T + _R + "portal='127.0.0.2:3260'\nchap_user='u'\n", "remotes[0].chap_secret", "go together"),
    (_T + _R + "portal='127.0.0.2:3260'\nchap_secret='a-to-b-secret-12'\n", "remotes[0].chap_user", "go together"),
    (_T + _R + "portal='127.0.0.2:3260'\nchap_user='u'\nchap_secret='short'\n", "remotes[0].chap_secret",
     "at least 12 bytes"),
    (_T + _R + "portal='127.0.0.2:3260'\nmutual_user='m'\nmutual_secret='b-to-a-secret-12'\n",
     "remotes[0].mutual_user", "needs chap_user and chap_secret"),
    (_T + _R + "portal='127.0.0.2:3260'\nchap_user='u'\nchap_secret='same-secret-123'\nmutual_user='m'\n"
     "mutual_secret='same-secret-123'\n", "remotes[0].mutual_secret", "must differ"),
    (_T + _R + "portal='127.0.0.2:3260'\nlun=0\n", "remotes[0].lun", "unknown key"),
    (_T + _R + "portal=3260\n", "remotes[0].portal", "must be str"),
    (_T + _R + "portal='127.0.0.2:3260'\nhttp='127.0.0.2'\n", "remotes[0].http", "is not HOST:PORT"),
    (_T + _R + "portal='127.0.0.2:3260'\n" + _R + "portal='127.0.0.3:3260'\n", "remotes[1].name", "duplicate remote b"),
])
def test_remote_errors_name_file_key_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    assert exc.value.key == key, str(exc.value)
    assert reason in exc.value.reason
    assert str(tmp_path / "c.toml") in str(exc.value)
    assert "secret-1" not in str(exc.value)  # a message names the key, never the secret


_ENC_LUN = """
[[targets]]
name = "iqn.2026-11.org.sanlab:array0"
[[targets.luns]]
lun = 0
size = "4MiB"
{extra}
"""


@pytest.mark.parametrize("extra,key,reason", [
    ('encryption = { key_file = "k", key_env = "K" }', "targets[0].luns[0].encryption", "give key_file or key_env"),
    ("encryption = {}", "targets[0].luns[0].encryption", "give key_file or key_env"),
    ('encryption = { key_env = "1-bad" }', "targets[0].luns[0].encryption.key_env", "not an environment variable"),
    ('encryption = { key_file = "k", cipher = "des" }', "targets[0].luns[0].encryption.cipher", ""),
])
def test_encryption_keys_are_checked(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_ENC_LUN.format(extra=extra))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.key == key and reason in exc.value.reason


def test_key_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "c.toml"
    path.write_text(_ENC_LUN.format(extra='encryption = { key_file = "lun0.key" }'))
    lc = load_config(path).targets[0].luns[0]
    assert lc.encryption is not None and lc.encryption.key_file == tmp_path / "conf" / "lun0.key"
    path.write_text(_ENC_LUN.format(extra="command_device = true\nencryption = { key_env = \"K\" }")
                    .replace('size = "4MiB"\n', ""))
    with pytest.raises(ConfigError, match="has no storage"):
        load_config(path)
