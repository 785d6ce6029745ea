//! Username/password authentication for the embedded broker, from a Mosquitto password file.
//!
//! Operators already know `mosquitto_passwd`: `mosquitto_passwd -c FILE USER` writes the file
//! this module reads, so no plaintext password is stored on the gateway. Each line is
//! `username:hash`; blank lines and `#` comments are ignored. Hashes:
//! - `$7$ITERATIONS$SALT$HASH` (Mosquitto 2): PBKDF2-HMAC-SHA512, base64 salt and hash;
//! - `$6$SALT$HASH` (Mosquitto 1.x): SHA-512 of the password followed by the salt.
//!
//! Verification is constant-time in the hash (aws-lc-rs, already linked through rustls).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::{constant_time, digest, pbkdf2};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    Pbkdf2Sha512 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// The users allowed to connect.
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<String, Hash>,
}

// Hashes are not secrets the way passwords are, but there is no reason to print them either.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.by_name.len())
            .finish()
    }
}

impl Users {
    /// Reads a password file; every bad line is reported with its number.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}: {e}; create it with `mosquitto_passwd -c {} USER`",
                path.display(),
                path.display()
            )
        })?;
        Users::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {}: expected username:hash", i + 1));
                continue;
            };
            match parse_hash(hash) {
                Ok(h) => {
                    if by_name.insert(user.to_owned(), h).is_some() {
                        problems.push(format!("line {}: user {user:?} appears twice", i + 1));
                    }
                }
                Err(e) => problems.push(format!("line {} (user {user:?}): {e}", i + 1)),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if by_name.is_empty() {
            return Err("names no user; add one with `mosquitto_passwd FILE USER`".into());
        }
        Ok(Users { by_name })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.by_name.get(user) {
            Some(Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            }) => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Some(Hash::Sha512 { salt, hash }) => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                constant_time::verify_slices_are_equal(ctx.finish().as_ref(), hash).is_ok()
            }
            None => {
                // Pay for a hash all the same, so that the time taken does not tell which
                // usernames exist.
                let _ = pbkdf2::verify(
                    pbkdf2::PBKDF2_HMAC_SHA512,
                    NonZeroU32::new(101).expect("non-zero"),
                    b"no such user",
                    password,
                    &[0; 64],
                );
                false
            }
        }
    }
}

fn parse_hash(s: &str) -> Result<Hash, String> {
    let b64 = |what: &str, v: &str| {
        STANDARD
            .decode(v)
            .map_err(|e| format!("the {what} is not base64 ({e})"))
    };
    let parts: Vec<&str> = s.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations = iterations
                .parse::<NonZeroU32>()
                .map_err(|_| format!("iteration count {iterations:?} is not a positive number"))?;
            let hash = b64("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!("a $7$ hash has 64 bytes, this one {}", hash.len()));
            }
            Ok(Hash::Pbkdf2Sha512 {
                iterations,
                salt: b64("salt", salt)?,
                hash,
            })
        }
        ["", "6", salt, hash] => {
            let hash = b64("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!("a $6$ hash has 64 bytes, this one {}", hash.len()));
            }
            Ok(Hash::Sha512 {
                salt: b64("salt", salt)?,
                hash,
            })
        }
        ["", kind, ..] => Err(format!(
            "hash type ${kind}$ is not supported (use $7$, what mosquitto_passwd writes, or $6$)"
        )),
        _ => {
            Err("the password is not hashed; hash the file with `mosquitto_passwd -U FILE`".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11 (`mosquitto_passwd -b FILE sensor s3cret`).
    const MOSQUITTO_7: &str = "sensor:$7$101$bgpycHYh9TaVdHcw$sR5TlyDh0ti2sZP6x5uLMzm4hGc9aIus5a1VcwG9HZhrsI//3YQUOAmHR/dsdxeZjqFhB8taKgXHvaTsr5VAJA==";

    fn sha512_line(user: &str, password: &str, salt: &[u8]) -> String {
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(password.as_bytes());
        ctx.update(salt);
        format!(
            "{user}:$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(ctx.finish().as_ref())
        )
    }

    #[test]
    fn verifies_a_mosquitto_passwd_line() {
        let users = Users::parse(MOSQUITTO_7).unwrap();
        assert!(users.verify("sensor", b"s3cret"));
        assert!(!users.verify("sensor", b"s3cret "));
        assert!(!users.verify("sensor", b""));
        assert!(!users.verify("other", b"s3cret"));
    }

    #[test]
    fn verifies_sha512_hashes() {
        let text = format!(
            "# comment\n\n{}\n{}\n",
            sha512_line("a", "pw-a", b"salt-a"),
            sha512_line("b", "pw-b", b"salt-b")
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("a", b"pw-a"));
        assert!(users.verify("b", b"pw-b"));
        assert!(!users.verify("a", b"pw-b"));
    }

    #[test]
    fn refuses_bad_files_naming_each_line() {
        let e = Users::parse("a:plain\nb\nc:$1$x$y\nd:$7$0$AAAA$AAAA\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("not hashed"), "{e}");
        assert!(e.contains("line 2") && e.contains("username:hash"), "{e}");
        assert!(e.contains("line 3") && e.contains("$1$"), "{e}");
        assert!(e.contains("line 4") && e.contains("iteration"), "{e}");
        assert!(Users::parse("# only a comment\n")
            .unwrap_err()
            .contains("no user"));
        let twice = format!(
            "{}\n{}",
            sha512_line("a", "x", b"s"),
            sha512_line("a", "y", b"t")
        );
        assert!(Users::parse(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn debug_output_shows_no_hash() {
        let users = Users::parse(MOSQUITTO_7).unwrap();
        assert_eq!(format!("{users:?}"), "Users { count: 1 }");
    }
}
