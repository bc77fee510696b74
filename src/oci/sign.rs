//! Signatures on shared-cache records: SSH signatures (SSHSIG, the format of `ssh-keygen -Y
//! sign`), Ed25519, in the namespace `tenon-cache`. Teams already hold such keys (they sign
//! git commits with them); `ssh-keygen -Y verify -n tenon-cache` checks a record by hand.
//!
//! What is signed: `"tenon-record-v1\n" + key + "\n" + config digest + "\n"`. The config lists
//! every output digest, so the signature covers the whole record. A git blob memo is signed
//! the same way over `"tenon-gitmemo-v1\n" + tree id + "\n" + config digest + "\n"`.

use std::path::Path;

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

pub const NAMESPACE: &str = "tenon-cache";

/// The bytes a record's signature covers.
pub fn record_message(key: &str, config_digest: &str) -> Vec<u8> {
    format!("tenon-record-v1\n{key}\n{config_digest}\n").into_bytes()
}

/// The bytes a git blob memo's signature covers (the memo of repository tree `tree`).
pub fn memo_message(tree: &str, config_digest: &str) -> Vec<u8> {
    format!("tenon-gitmemo-v1\n{tree}\n{config_digest}\n").into_bytes()
}

/// A private key that signs records.
pub struct Signer {
    key: PrivateKey,
}

impl Signer {
    /// Load an OpenSSH private key (unencrypted, Ed25519). Errors name the file, never its
    /// content.
    pub fn load(path: &Path) -> Result<Signer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = PrivateKey::from_openssh(text.trim())
            .map_err(|_| format!("{} is not an OpenSSH private key", path.display()))?;
        if key.is_encrypted() {
            return Err(format!(
                "{} is encrypted with a passphrase: use an unencrypted key (e.g. a CI secret file with \
                 mode 0600); passphrases and ssh-agent are not supported",
                path.display()
            ));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(format!("{} is a {} key; record signatures use Ed25519", path.display(), key.algorithm()));
        }
        Ok(Signer { key })
    }

    /// The armored `-----BEGIN SSH SIGNATURE-----` text of `msg`'s signature.
    pub fn sign(&self, msg: &[u8]) -> Result<String, String> {
        let sig = self.key.sign(NAMESPACE, HashAlg::Sha512, msg).map_err(|e| format!("signing failed: {e}"))?;
        sig.to_pem(LineEnding::LF).map_err(|e| format!("encoding the signature: {e}"))
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }
}

/// The public keys whose record signatures are accepted.
pub struct Verifier {
    keys: Vec<PublicKey>,
}

impl Verifier {
    /// Read OpenSSH public keys, one per line (`ssh-ed25519 AAAA… comment`), or an
    /// `allowed_signers` file (`principals [options] ssh-ed25519 AAAA… [comment]`). Blank lines
    /// and `#` comments are skipped; anything else that is not an Ed25519 key is an error
    /// naming file:line. Of the `allowed_signers` options, `namespaces="…"` is honoured (a key
    /// limited to other namespaces is not trusted here, as `ssh-keygen -Y verify` would not);
    /// `cert-authority`, `valid-after` and `valid-before` are refused rather than ignored,
    /// since ignoring them would trust more than the file says.
    pub fn load(path: &Path) -> Result<Verifier, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut keys = Vec::new();
        let mut other_namespaces = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: String| format!("{}:{}: {what}", path.display(), i + 1);
            match parse_key_line(line).map_err(at)? {
                Some(k) => keys.push(k),
                None => other_namespaces += 1,
            }
        }
        if keys.is_empty() {
            return Err(match other_namespaces {
                0 => format!("{}: no public key in it", path.display()),
                _ => format!("{}: every key in it is limited to namespaces other than {NAMESPACE:?}", path.display()),
            });
        }
        Ok(Verifier { keys })
    }

    /// Check `armored` over `msg`: made in [`NAMESPACE`] by one of the keys. Returns the
    /// signer's fingerprint, or why not.
    pub fn verify(&self, msg: &[u8], armored: &str) -> Result<String, String> {
        let sig = SshSig::from_pem(armored.trim()).map_err(|e| format!("not an SSH signature ({e})"))?;
        if sig.namespace() != NAMESPACE {
            return Err(format!("signed for namespace {:?}, not {NAMESPACE:?}", sig.namespace()));
        }
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            let fp = PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256);
            return Err(format!("signed by {fp}, which is not a trusted key"));
        };
        key.verify(NAMESPACE, msg, &sig).map_err(|_| "the signature does not match the record".to_string())?;
        Ok(key.fingerprint(HashAlg::Sha256).to_string())
    }
}

/// Split on whitespace (or `sep`) outside double quotes.
fn split_unquoted(s: &str, sep: impl Fn(char) -> bool) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted && sep(c) {
            if i > start {
                out.push(&s[start..i]);
            }
            start = i + c.len_utf8();
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// One key line: `Some(key)`, `None` for a key limited to other namespaces, or why not.
fn parse_key_line(line: &str) -> Result<Option<PublicKey>, String> {
    let words = split_unquoted(line, char::is_whitespace);
    // the key starts at its algorithm name, after the principals and options if any
    // (not `Other`: that is any `name@domain`, which a principal such as ci@example.com is)
    let is_key_type =
        |w: &&str| matches!(ssh_key::Algorithm::new(w), Ok(a) if !matches!(a, ssh_key::Algorithm::Other(_)));
    let Some(at) = words.iter().position(is_key_type) else {
        return Err("not an OpenSSH public key (no key type such as ssh-ed25519)".into());
    };
    let mut ours = true;
    if at >= 2 {
        for opt in words[1..at].iter().flat_map(|w| split_unquoted(w, |c| c == ',')) {
            let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
            match name.to_ascii_lowercase().as_str() {
                "namespaces" => {
                    ours = value.trim_matches('"').split(',').any(|n| n.trim() == NAMESPACE);
                }
                "cert-authority" | "valid-after" | "valid-before" => {
                    return Err(format!("the {name} option is not supported for record signatures"));
                }
                _ => return Err(format!("unknown option {name:?}")),
            }
        }
    }
    let key = PublicKey::from_openssh(&words[at..].join(" "))
        .map_err(|_| "not an OpenSSH public key (the key data does not parse)".to_string())?;
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(format!("a {} key; record signatures use Ed25519", key.algorithm()));
    }
    Ok(ours.then_some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `ssh-keygen` (openssh-client), or `None` outside CI when missing.
    fn keygen(dir: &Path, name: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let key = dir.join(name);
        match Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&key).status() {
            Ok(s) if s.success() => Some((key.clone(), key.with_extension("pub"))),
            _ => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "ssh-keygen is missing but CI=true");
                eprintln!("SKIP: ssh-keygen not installed");
                None
            }
        }
    }

    #[test]
    fn sign_verify_and_every_way_to_fail() {
        let t = tempfile::tempdir().unwrap();
        let Some((k1, p1)) = keygen(t.path(), "one") else { return };
        let (_, p2) = keygen(t.path(), "two").unwrap();
        let s = Signer::load(&k1).unwrap();
        let msg = record_message(&"a".repeat(64), "sha256:00");
        let sig = s.sign(&msg).unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        let v1 = Verifier::load(&p1).unwrap();
        assert_eq!(v1.verify(&msg, &sig).unwrap(), s.fingerprint());
        // another message, another key, garbage
        let e = v1.verify(&record_message(&"b".repeat(64), "sha256:00"), &sig).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = Verifier::load(&p2).unwrap().verify(&msg, &sig).unwrap_err();
        assert!(e.contains("not a trusted key") && e.contains(&s.fingerprint()), "{e}");
        assert!(v1.verify(&msg, "nonsense").unwrap_err().contains("not an SSH signature"));
        // an allowed_signers file with principals and options works too
        let allowed = t.path().join("allowed");
        let pubtext = std::fs::read_to_string(&p1).unwrap();
        std::fs::write(&allowed, format!("# ci\nci@example.com,bot namespaces=\"tenon-cache\" {pubtext}\n")).unwrap();
        assert!(Verifier::load(&allowed).unwrap().verify(&msg, &sig).is_ok());
        std::fs::write(&allowed, "not a key\n").unwrap();
        assert!(Verifier::load(&allowed).err().unwrap().contains(":1: not an OpenSSH public key"));
        // a public key is not a signing key, and the error shows no key material
        let e = Signer::load(&p1).err().unwrap();
        assert!(e.contains("not an OpenSSH private key") && !e.contains("AAAA"), "{e}");
    }

    #[test]
    fn ssh_keygen_checks_our_signatures_and_we_check_its() {
        let t = tempfile::tempdir().unwrap();
        let Some((k, p)) = keygen(t.path(), "ci") else { return };
        let msg = record_message(&"c".repeat(64), "sha256:11");
        let msg_file = t.path().join("msg");
        std::fs::write(&msg_file, &msg).unwrap();
        let allowed = t.path().join("allowed_signers");
        std::fs::write(&allowed, format!("ci {}", std::fs::read_to_string(&p).unwrap())).unwrap();
        // ours -> ssh-keygen -Y verify
        let sig_file = t.path().join("ours.sig");
        std::fs::write(&sig_file, Signer::load(&k).unwrap().sign(&msg).unwrap()).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", NAMESPACE, "-I", "ci", "-f"])
            .arg(&allowed)
            .arg("-s")
            .arg(&sig_file)
            .stdin(std::fs::File::open(&msg_file).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // ssh-keygen -Y sign -> ours
        let st = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
            .arg(&k)
            .arg(&msg_file)
            .status()
            .unwrap();
        assert!(st.success());
        let theirs = std::fs::read_to_string(t.path().join("msg.sig")).unwrap();
        assert!(Verifier::load(&p).unwrap().verify(&msg, &theirs).is_ok());
        // signed in another namespace: refused
        std::fs::remove_file(t.path().join("msg.sig")).unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "git", "-f"])
            .arg(&k)
            .arg(&msg_file)
            .status()
            .unwrap();
        assert!(st.success());
        let git = std::fs::read_to_string(t.path().join("msg.sig")).unwrap();
        assert!(Verifier::load(&p).unwrap().verify(&msg, &git).unwrap_err().contains("namespace"));
    }

    #[test]
    fn key_files_say_what_is_wrong_with_them() {
        let t = tempfile::tempdir().unwrap();
        let Some((k, p)) = keygen(t.path(), "ci") else { return };
        let pubtext = std::fs::read_to_string(&p).unwrap();
        let msg = record_message(&"d".repeat(64), "sha256:22");
        let sig = Signer::load(&k).unwrap().sign(&msg).unwrap();
        let file = t.path().join("keys");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Verifier::load(&file)
        };
        // principals with @, quoted options with spaces and commas
        let v = load(&format!("ci@example.com,bot@example.com namespaces=\"git, tenon-cache\" {pubtext}")).unwrap();
        assert!(v.verify(&msg, &sig).is_ok());
        // a key limited to other namespaces is not trusted here
        let e = load(&format!("ci@example.com namespaces=\"git\" {pubtext}")).err().unwrap();
        assert!(e.contains("namespaces other than"), "{e}");
        for (line, says) in [
            (format!("ca@example.com cert-authority {pubtext}"), ":1: the cert-authority option is not supported"),
            (format!("ci valid-before=\"20300101\" {pubtext}"), ":1: the valid-before option is not supported"),
            (format!("ci frobnicate {pubtext}"), ":1: unknown option \"frobnicate\""),
            (format!("# a comment\n\nssh-ed25519 AAAAnotbase64 x\n{pubtext}"), ":3: not an OpenSSH public key"),
            ("\n# only comments\n".to_string(), "no public key in it"),
        ] {
            let e = load(&line).err().unwrap_or_else(|| panic!("accepted {line:?}"));
            assert!(e.contains(says) && e.contains(&*file.display().to_string()), "{e}");
        }
        // an RSA key: refused with its line
        let rsa = t.path().join("rsa");
        let st = Command::new("ssh-keygen").args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"]).arg(&rsa).status();
        assert!(st.unwrap().success());
        let e = load(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap()).err().unwrap();
        assert!(e.contains(":1: a ssh-rsa key; record signatures use Ed25519"), "{e}");
        let e = Signer::load(&rsa).err().unwrap();
        assert!(e.contains("record signatures use Ed25519") && !e.contains("PRIVATE"), "{e}");
        // an encrypted private key: a clear error naming the file, no key material
        let enc = t.path().join("enc");
        let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "s3cret pass", "-f"]).arg(&enc).status();
        assert!(st.unwrap().success());
        let e = Signer::load(&enc).err().unwrap();
        assert!(e.contains(&*enc.display().to_string()) && e.contains("unencrypted") && e.contains("ssh-agent"), "{e}");
        assert!(!e.contains("s3cret") && !e.contains("BEGIN") && !e.contains("AAAA"), "{e}");
        // a missing file names itself
        let e = Signer::load(&t.path().join("absent")).err().unwrap();
        assert!(e.contains("absent"), "{e}");
    }
}
