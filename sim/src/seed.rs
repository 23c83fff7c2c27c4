//! Which seeds to run, from the environment, and how to replay one.

/// Runs exactly this seed (twice: the digests must be equal): `EDGE_SIM_SEED=1234`.
pub const SEED_ENV: &str = "EDGE_SIM_SEED";
/// How many seeds a sweep runs.
pub const SEEDS_ENV: &str = "EDGE_SIM_SEEDS";
/// The first seed of a sweep (so a soak can cover new ground each time).
pub const FIRST_SEED_ENV: &str = "EDGE_SIM_FIRST_SEED";

/// A seed in decimal or `0x` hex.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The environment variable `name` as a seed or count, if set and valid.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| parse_seed(&s))
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("{SEED_ENV}={seed} cargo nextest run -p edge-sim --test seeds")
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(super::parse_seed("42"), Some(42));
        assert_eq!(super::parse_seed(" 0xff "), Some(255));
        assert_eq!(super::parse_seed("x"), None);
    }
}
