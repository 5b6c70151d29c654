//! What a TcEx app is given (spec §2, §3, §8): the run's private folder with `in/ out/ temp/
//! log/`, and the params file, AES-CBC encrypted with a fresh key.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The run's private folder (0700), removed with everything in it when dropped.
pub(crate) struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A new folder under `base`: `<base>/soarjobd-tcex-<random>/` with `in/ out/ temp/ log/`,
    /// all 0700, owned by `owner` (uid, gid) when given (the app runs as another user).
    pub fn create(base: &Path, owner: Option<(u32, u32)>) -> std::io::Result<RunDir> {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = std::fs::DirBuilder::new();
        b.mode(0o700);
        let root = base.join(format!("soarjobd-tcex-{}", random_text(16)));
        b.create(&root)?;
        let dir = RunDir { root };
        for sub in ["in", "out", "temp", "log"] {
            b.create(dir.root.join(sub))?;
        }
        if let Some((uid, gid)) = owner {
            for p in [
                &dir.root,
                &dir.path("in"),
                &dir.path("out"),
                &dir.path("temp"),
                &dir.path("log"),
            ] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        Ok(dir)
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    /// Writes the encrypted params file (0600, created new) and returns its path and key.
    pub fn write_params(
        &self,
        params: &Map<String, Value>,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<(PathBuf, String)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key = random_text(32);
        let plain = serde_json::to_vec(params).map_err(std::io::Error::other)?;
        let cipher = encrypt(key.as_bytes(), &plain);
        let path = self.root.join("params.aes");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&cipher)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        Ok((path, key))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.root.display(), error = %e, "cannot remove the TcEx run folder");
        }
    }
}

/// `n` random characters of `[A-Za-z0-9]`.
pub(crate) fn random_text(n: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// AES-CBC (the key's length picks AES-128/192/256; a 32-byte key here), IV of 16 zero bytes,
/// PKCS#7 padding, no header: what tcex decrypts the params file with.
pub(crate) fn encrypt(key: &[u8], plain: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
    let iv = [0u8; 16];
    match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new(key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new(key.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new(key[..32].into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain),
    }
}

#[cfg(test)]
pub(crate) fn decrypt(key: &[u8], cipher: &[u8]) -> Option<Vec<u8>> {
    use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    let iv = [0u8; 16];
    cbc::Decryptor::<aes::Aes256>::new(key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(cipher)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_256_cbc_zero_iv_pkcs7() {
        // NIST SP 800-38A F.2.5 (CBC-AES256) has a non-zero IV; this checks the layout
        // instead: a full block of padding after a block-sized plaintext, and the round trip.
        let key = b"0123456789abcdef0123456789abcdef";
        let c = encrypt(key, b"0123456789abcdef");
        assert_eq!(c.len(), 32);
        assert_eq!(decrypt(key, &c).unwrap(), b"0123456789abcdef");
        let c = encrypt(key, br#"{"a":"b"}"#);
        assert_eq!(c.len(), 16);
        assert_eq!(decrypt(key, &c).unwrap(), br#"{"a":"b"}"#);
    }

    #[test]
    fn the_run_folder_is_private_and_goes_away() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path(), None).unwrap();
        let root = dir.root().to_path_buf();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mut m = Map::new();
        m.insert("tc_token".into(), Value::String("t".into()));
        let (file, key) = dir.write_params(&m, None).unwrap();
        assert_eq!(key.len(), 32);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let plain = decrypt(key.as_bytes(), &std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(plain, br#"{"tc_token":"t"}"#);
        assert!(root.join("log").is_dir() && root.join("out").is_dir());
        drop(dir);
        assert!(!root.exists());
    }
}
