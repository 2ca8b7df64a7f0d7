"""Signed packages with OpenSSF's model-signing (key-based, offline): `model.sig` covers every file.

The manifest's sha256 sums say whether a file changed by accident; anyone who can change a file can
rewrite them too. The signature is made with the publisher's private key over the hash of every file
of the package (manifest, model files, card, labels, parity set), so `factory verify --public-key`
refuses a package whose content changed after signing, a rewritten manifest included. Keys: elliptic
curve, PEM (`openssl ecparam -name prime256v1 -genkey -noout -out key.pem` and
`openssl ec -in key.pem -pubout -out key.pub`). model-signing is an optional extra
(`pip install 'ofa-factory[sign]'`), imported only when a key is given.
"""

from __future__ import annotations

from pathlib import Path

SIGNATURE_FILE = "model.sig"


class SigningUnavailable(ValueError):
    """model-signing is not installed."""


def _model_signing():
    try:
        import model_signing
    except ImportError:
        raise SigningUnavailable("signing needs OpenSSF's model-signing, an optional extra: "
                                 "pip install 'ofa-factory[sign]' (make demo / make test install it)") from None
    return model_signing


def _hashing_config(model_signing):
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE])


def sign_package(package: Path, private_key: Path) -> Path:
    """Sign every file of `package` (the signature itself excepted) with the EC private key (PEM);
    write and return package/model.sig. ValueError naming the key file when it cannot be used."""
    ms = _model_signing()
    key = Path(private_key)
    if not key.is_file():
        raise ValueError(f"--sign-key {key}: no such file")
    try:
        config = ms.signing.Config().use_elliptic_key_signer(private_key=key)
    except Exception as exc:  # a non-PEM or non-EC key
        raise ValueError(f"--sign-key {key}: not an elliptic-curve private key in PEM ({exc})") from None
    config.set_hashing_config(_hashing_config(ms)).sign(package, package / SIGNATURE_FILE)
    return package / SIGNATURE_FILE


def signature_failures(package: Path, public_key: Path) -> list[str]:
    """Why `package` does not verify against the public key (PEM): [] when it does. Each failure names
    the file: a changed, missing or added file, or a signature that this key did not make."""
    ms = _model_signing()
    package, key = Path(package), Path(public_key)
    if not key.is_file():
        raise ValueError(f"--public-key {key}: no such file")
    signature = package / SIGNATURE_FILE
    if not signature.is_file():
        return [f"{SIGNATURE_FILE}: missing (the package is not signed)"]
    try:
        config = ms.verifying.Config().use_elliptic_key_verifier(public_key=key)
    except Exception as exc:
        raise ValueError(f"--public-key {key}: not an elliptic-curve public key in PEM ({exc})") from None
    try:
        config.set_hashing_config(_hashing_config(ms)).verify(package, signature)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Signature mismatch:"):
            return [f"content changed after signing: {part.split(': Expected')[0].strip()}"
                    for part in _mismatches(text)]
        return [f"{SIGNATURE_FILE}: does not verify with {key} ({text})"]
    except Exception as exc:  # a signature made by another key, or a corrupt signature file
        return [f"{SIGNATURE_FILE}: does not verify with {key} ({type(exc).__name__}: {exc})"]
    return []


def _mismatches(message: str) -> list[str]:
    """model-signing's "Signature mismatch: [...]" -> one entry per file."""
    import ast

    body = message.split(":", 1)[1].strip()
    try:
        items = ast.literal_eval(body)
        return [str(i) for i in items] if isinstance(items, list) else [body]
    except (ValueError, SyntaxError):
        return [body]
