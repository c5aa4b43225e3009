"""The VRP PKI commands: imports from files next to the configuration, bad files, undo, the peer and
proposal settings for certificates, the displays (golden), and load -> render -> load round trips."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ikegate.cli.commands import default_tree
from ikegate.cli.loader import load_config
from ikegate.cli.render.config import render_config
from ikegate.cli.render.pki import fingerprint
from ikegate.cli.shell import Shell
from ikegate.gateway.translate import auth_settings, ike_config, local_identity
from ikegate.policy.model import AuthenticationMethod, Config, IdType
from ikegate.policy.users import KeyKind
from tests.unit import pki_factory as f
from tests.unit.test_cli_config_commands import fails

TREE = default_tree()
GOLDEN = Path(__file__).parent.parent / "golden"
PKI = f.standard_pki()
PASSWORD = "s3cret-Pass"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    f.write_cert(tmp_path / "root.pem", PKI.root.cert)
    f.write_cert(tmp_path / "inter.der", PKI.intermediate.cert, der=True)
    f.write_cert(tmp_path / "gw1.pem", PKI.gateway.cert)
    f.write_key(tmp_path / "gw1.key", PKI.gateway.key, password=PASSWORD)
    f.write_cert(tmp_path / "gw2.pem", PKI.ecdsa.cert)
    f.write_key(tmp_path / "gw2.der", PKI.ecdsa.key, der=True)
    f.write_crl(tmp_path / "inter.crl", f.crl(PKI.intermediate, [0x1A2B, 0x77]))
    return tmp_path


def shell_in(directory: Path) -> Shell:
    config = Config()
    config.pki.directory = directory
    shell = Shell(config, tree=TREE)
    shell.execute("system-view")
    return shell


def run(shell: Shell, *lines: str) -> Shell:
    for line in lines:
        outcome = shell.execute(line)
        assert outcome.ok, f"{line}: {outcome.text}"
    return shell


IMPORTS = (
    f"pki import rsa-key-pair gw1 pem filename gw1.key password {PASSWORD}",
    "pki import ecc-key-pair gw2 der filename gw2.der",
    "pki import-certificate ca filename root.pem",
    "pki import-certificate ca filename inter.der",
    "pki import-certificate local filename gw1.pem",
    "pki import-certificate local filename gw2.pem",
    "pki import-crl filename inter.crl",
)
PEER = (
    "ike proposal 10",
    "authentication-method rsa-signature",
    "quit",
    "ike peer branch",
    "ike-proposal 10",
    "certificate local-filename gw1.pem",
    "certificate send-chain",
    "local-id-type dn",
    "remote-id-type dn",
    "remote-id CN=gw2.example,O=ikegate,C=CN",
    "remote-address 192.0.2.2",
    "quit",
)


def test_imports_fill_the_store(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS)
    store = shell.config.pki
    assert list(store.cas) == ["root.pem", "inter.der"]
    assert store.cas["inter.der"].cert == PKI.intermediate.cert
    assert list(store.locals) == ["gw1.pem", "gw2.pem"]
    assert store.keys["gw1"].kind is KeyKind.RSA and store.keys["gw2"].kind is KeyKind.ECC
    assert store.key_for(PKI.gateway.cert) is store.keys["gw1"]
    assert store.chain_of(PKI.gateway.cert) == [PKI.intermediate.cert]
    assert len(store.crl_list) == 1


def test_current_configuration_names_files_never_key_material(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS, *PEER)
    text = shell.execute("display current-configuration").text
    lines = text.splitlines()
    block = [line for line in lines if line.startswith("pki ")]
    first = lines.index(block[0])
    assert lines[first - 1] == "#" and lines[first:first + len(block)] == block  # one section
    assert block[0].startswith("pki import rsa-key-pair gw1 pem filename gw1.key password %^%#")
    assert block[1:] == [
        "pki import ecc-key-pair gw2 der filename gw2.der",
        "pki import-certificate ca filename root.pem",
        "pki import-certificate ca filename inter.der",
        "pki import-certificate local filename gw1.pem",
        "pki import-certificate local filename gw2.pem",
        "pki import-crl filename inter.crl",
    ]
    assert " authentication-method rsa-signature" in text
    start = lines.index("ike peer branch")
    assert lines[start:lines.index("#", start)] == [
        "ike peer branch", " ike-proposal 10", " local-id-type dn", " remote-id-type dn",
        " remote-id CN=gw2.example,O=ikegate,C=CN", " remote-address 192.0.2.2",
        " certificate local-filename gw1.pem", " certificate send-chain"]
    assert PASSWORD not in text
    assert "BEGIN" not in text
    numbers = PKI.gateway.key.private_numbers()  # type: ignore[union-attr]
    assert f"{numbers.d:x}"[:32] not in text.lower()


def test_round_trip_reloads_the_files(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS, *PEER[:3], "ike peer branch", "ike-proposal 10",
                "certificate local-filename gw1.pem", "certificate send-chain", "remote-id-type fqdn",
                "remote-id gw2.example", "quit")
    text = "\n".join(render_config(shell.config))
    loaded, errors = load_config(text, TREE, directory=files)
    assert errors == []
    assert render_config(loaded) == render_config(shell.config)
    assert loaded.pki.keys["gw1"].password == PASSWORD
    assert loaded.pki.locals["gw2.pem"].cert == PKI.ecdsa.cert
    peer = loaded.ike_peers["branch"]
    assert (peer.certificate_local, peer.send_chain, peer.remote_id_type) == ("gw1.pem", True, IdType.FQDN)
    assert loaded.ike_proposals[10].authentication_method is AuthenticationMethod.RSA_SIGNATURE


def test_abbreviations(files: Path) -> None:
    shell = run(shell_in(files), "pki import-ce ca fi root.pem", "pki import ecc gw2 d f gw2.der",
                "pki import-cr f inter.crl", "ike proposal 5", "authentication-method ecd")
    assert "root.pem" in shell.config.pki.cas and "gw2" in shell.config.pki.keys
    assert "inter.crl" in shell.config.pki.crls
    assert shell.config.ike_proposals[5].authentication_method is AuthenticationMethod.ECDSA_SIGNATURE


def test_caret_errors(files: Path) -> None:
    shell = shell_in(files)
    outcome = shell.execute("pki import-certificate peer filename root.pem")
    assert outcome.error is not None and "Unrecognized command found at '^' position" in outcome.error
    assert outcome.text.splitlines()[0].endswith("^")
    assert "Incomplete command" in fails(shell, "pki import-certificate ca filename")
    assert "Incomplete command" in fails(shell, "pki import rsa-key-pair k pem")
    assert "Wrong parameter" in fails(shell, "pki import-crl filename " + "x" * 64)
    run(shell, "ike proposal 1")
    assert "Unrecognized command" in fails(shell, "authentication-method digital-envelope")


@pytest.mark.parametrize(("line", "reason"), [
    ("pki import-certificate ca filename nothere.pem", "nothere.pem: no such file in "),
    ("pki import-certificate ca filename junk.pem", "junk.pem: not a valid X.509 certificate"),
    ("pki import-certificate ca filename empty.pem", "empty.pem: the file is empty"),
    ("pki import-certificate ca filename two.pem", "holds 2 certificates; import one certificate per file"),
    ("pki import-certificate ca filename gw1.pem", "not a CA certificate (basicConstraints CA:TRUE is missing)"),
    ("pki import-certificate local filename gw1.key", "gw1.key: not a valid X.509 certificate"),
    ("pki import-certificate ca filename ../root.pem", "a file name, not a path, is expected"),
    ("pki import rsa-key-pair k pem filename gw1.key", "the key file is encrypted and no password was given"),
    ("pki import rsa-key-pair k pem filename gw1.key password wrong", "wrong password for the key file"),
    ("pki import rsa-key-pair k der filename gw2.der", "holds an ECDSA key; use pki import ecc-key-pair"),
    ("pki import ecc-key-pair k pem filename gw2.der", "not a PEM file"),
    ("pki import rsa-key-pair k pem filename small.key", "RSA key of 1024 bits (the device holds 2048 to 4096 bits)"),
    ("pki import-crl filename root.pem", "root.pem: not a valid CRL"),
    ("pki import ecc-key-pair k pem filename p521.key", "ECDSA key on secp521r1 (the device holds secp256r1 and"),
])
def test_bad_files_are_refused_and_nothing_changes(files: Path, line: str, reason: str) -> None:
    (files / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    (files / "empty.pem").write_bytes(b"")
    (files / "two.pem").write_bytes((files / "root.pem").read_bytes() + (files / "gw1.pem").read_bytes())
    from cryptography.hazmat.primitives.asymmetric import rsa
    f.write_key(files / "small.key", rsa.generate_private_key(65537, 1024))
    f.write_key(files / "p521.key", f.ec_key("secp521r1"))
    shell = run(shell_in(files), *IMPORTS)
    before = (dict(shell.config.pki.cas), dict(shell.config.pki.locals), dict(shell.config.pki.keys),
              dict(shell.config.pki.crls))
    error = fails(shell, line)
    assert error.startswith("Error: Failed to import the ")
    assert reason in error
    assert error.endswith(".")
    after = (shell.config.pki.cas, shell.config.pki.locals, shell.config.pki.keys, shell.config.pki.crls)
    assert after == before


def test_a_replaced_file_that_no_longer_parses_keeps_the_loaded_one(files: Path) -> None:
    shell = run(shell_in(files), "pki import-certificate ca filename root.pem")
    (files / "root.pem").write_text("garbage")
    assert "root.pem" in fails(shell, "pki import-certificate ca filename root.pem")
    assert shell.config.pki.cas["root.pem"].cert == PKI.root.cert


def test_config_with_a_missing_file_reports_the_line_and_loads_the_rest(files: Path) -> None:
    text = "\n".join(["#", "pki import-certificate ca filename root.pem",
                      "pki import-certificate ca filename gone.pem", "pki import-crl filename inter.crl", "#",
                      "ike peer p", " certificate local-filename gw1.pem", "#", "return"])
    config, errors = load_config(text, TREE, directory=files)
    assert [(e.line_number, "gone.pem" in e.message) for e in errors] == [(3, True)]
    assert list(config.pki.cas) == ["root.pem"] and list(config.pki.crls) == ["inter.crl"]
    assert config.ike_peers["p"].certificate_local == "gw1.pem"  # judged as a whole, not refused on load


def test_undo(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS, "undo pki import-certificate local filename gw2.pem",
                "undo pki import ecc-key-pair gw2", "undo pki import-crl filename inter.crl")
    store = shell.config.pki
    assert list(store.locals) == ["gw1.pem"] and list(store.keys) == ["gw1"] and not store.crls
    assert "is not imported" in fails(shell, "undo pki import-certificate ca filename nope.pem")
    assert "does not exist" in fails(shell, "undo pki import ecc-key-pair gw1")  # gw1 is an RSA key pair
    run(shell, "ike peer p", "certificate local-filename gw1.pem", "quit")
    assert fails(shell, "undo pki import-certificate local filename gw1.pem") == (
        "Error: The local certificate gw1.pem is used by IKE peer p.")
    assert "gw1.pem" in shell.config.pki.locals


def test_peer_certificate_must_be_imported(files: Path) -> None:
    shell = run(shell_in(files), "ike peer p")
    assert fails(shell, "certificate local-filename gw1.pem") == "Error: The local certificate gw1.pem is not imported."
    run(shell, "quit", "pki import-certificate local filename gw1.pem", "ike peer p",
        "certificate local-filename gw1.pem", "undo certificate local-filename", "undo certificate send-chain")
    assert shell.config.ike_peers["p"].certificate_local is None


# --- displays ------------------------------------------------------------------------------------------
def _golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def _fixed_pki(directory: Path) -> None:
    """Certificates with fixed names, serials and dates (keys and signatures still vary: the
    fingerprint is replaced by a token before the comparison)."""
    start = f.NOW - timedelta(days=1)
    root = f.certificate("Test Root CA", f.rsa_key(2048, 1), ca=True, serial=0x01, not_before=start,
                         not_after=start + timedelta(days=3650))
    gw = f.certificate("gw1.example", f.rsa_key(2048, 3), root, serial=0x1A2B, not_before=start,
                       not_after=start + timedelta(days=365),
                       sans=[f.dns("gw1.example"), f.ip("192.0.2.1")])
    f.write_cert(directory / "root.pem", root.cert)
    f.write_cert(directory / "gw1.pem", gw.cert)
    f.write_key(directory / "gw1.key", gw.key)
    f.write_crl(directory / "root.crl", f.crl(root, [0x1A2B, 0x05], last=f.NOW))


def _tokens(text: str, store_items: list[x509.Certificate | x509.CertificateRevocationList]) -> str:
    for item in store_items:
        text = text.replace(fingerprint(item), "{fingerprint}")
    return text


def test_display_pki_certificate_golden(files: Path) -> None:
    _fixed_pki(files)
    shell = run(shell_in(files), "pki import rsa-key-pair gw1 pem filename gw1.key",
                "pki import-certificate ca filename root.pem", "pki import-certificate local filename gw1.pem",
                "pki import-crl filename root.crl", "return")
    store = shell.config.pki
    items: list[x509.Certificate | x509.CertificateRevocationList] = [
        *store.ca_certificates, *(e.cert for e in store.locals.values()), *store.crl_list]
    _golden("display_pki_certificate_ca", _tokens(shell.execute("display pki certificate ca").text + "\n", items))
    _golden("display_pki_certificate_local",
            _tokens(shell.execute("display pki certificate local").text + "\n", items))
    _golden("display_pki_crl", _tokens(shell.execute("display pki crl").text + "\n", items))
    assert "BEGIN" not in shell.execute("display pki certificate local").text
    assert shell.execute("display pki certificate local filename x.pem").text == (
        "Info: No local certificate x.pem is imported.")


def test_display_ike_peer_shows_the_certificate(files: Path) -> None:
    from ikegate.cli.render.ike_info import peer_detail

    shell = run(shell_in(files), *IMPORTS, *PEER, "ike peer psk", "quit")
    text = peer_detail(shell.config, shell.config.ike_peers["branch"])
    assert [line.split(":")[-1].strip() for line in text if "certificate" in line.lower()] == ["gw1.pem", "enable"]
    assert not [line for line in peer_detail(shell.config, shell.config.ike_peers["psk"]) if "ertificate" in line]


def test_display_pki_json(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS)
    records = json.loads(shell.execute("display pki certificate local | json").text)["certificate"]
    assert [r["filename"] for r in records] == ["gw1.pem", "gw2.pem"]
    assert records[0]["serial"] == "1A:2B" and records[0]["key"] == "RSA 2048 bits"
    assert records[0]["key_pair"] == "gw1" and records[1]["key"] == "ECDSA secp256r1"
    assert records[0]["subject"] == "C=CN, O=ikegate, CN=gw1.example"
    crls = json.loads(shell.execute("display pki crl | json").text)["crl"]
    assert [r["serial"] for r in crls[0]["revoked"]] == ["1A:2B", "77"]


# --- what the engines get ----------------------------------------------------------------------------
def test_auth_settings_from_the_configuration(files: Path) -> None:
    shell = run(shell_in(files), *IMPORTS, *PEER)
    config = shell.config
    peer = config.ike_peers["branch"]
    settings = auth_settings(config, peer)
    assert settings.method is AuthenticationMethod.RSA_SIGNATURE
    assert settings.local is not None and settings.local.certificate == PKI.gateway.cert
    assert settings.local.chain == (PKI.intermediate.cert,)
    assert settings.certificates_to_send() == [PKI.gateway.cert, PKI.intermediate.cert]
    assert settings.remote_id == (IdType.DN, "CN=gw2.example,O=ikegate,C=CN")
    assert len(settings.certreq()) == 40
    assert local_identity(config, peer, None) == (9, PKI.gateway.cert.subject.public_bytes())
    engine = ike_config(config, peer, None, ike_port=500, natt_port=4500)
    assert engine.local_id == (9, PKI.gateway.cert.subject.public_bytes()) and engine.remote_id is None
    # A PSK peer beside it keeps its PSK settings.
    run(shell, "ike peer psk", "pre-shared-key Abc12345", "quit")
    psk = auth_settings(config, config.ike_peers["psk"])
    assert psk.method is AuthenticationMethod.PRE_SHARE and psk.psk == b"Abc12345" and psk.local is None


def test_local_dn_string_is_encoded() -> None:
    from ikegate.gateway.translate import identity

    found = identity(IdType.DN, "C=CN,CN=gw", None)
    assert found is not None and found[0] == 9
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    assert found[1] == name.public_bytes()
    assert serialization  # (keeps the import list honest for the key checks above)


def test_a_configuration_with_pki_material_crosses_to_worker_processes(files: Path) -> None:
    """Workers receive the configuration pickled (ikegate.workers.rpc): certificates, keys and CRLs go as
    DER and come back equal, and the translated peer still signs with the same key."""
    import pickle

    shell = run(shell_in(files), *IMPORTS, *PEER)
    copy = pickle.loads(pickle.dumps(shell.config, protocol=pickle.HIGHEST_PROTOCOL))
    store = copy.pki
    assert list(store.cas) == ["root.pem", "inter.der"] and store.cas["inter.der"].cert == PKI.intermediate.cert
    assert store.locals["gw2.pem"].cert == PKI.ecdsa.cert
    assert store.crl_list == shell.config.pki.crl_list
    key = store.keys["gw1"]
    assert key.kind is KeyKind.RSA and key.password == PASSWORD and key.filename == "gw1.key"
    assert key.key.private_numbers() == PKI.gateway.key.private_numbers()
    assert store.key_for(PKI.gateway.cert) is key
    assert render_config(copy) == render_config(shell.config)
