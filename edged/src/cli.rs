//! The command line, as clap parses it. Validation beyond syntax happens in the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Default configuration file.
pub const CONFIG_DEFAULT: &str = "/etc/edged/edge.toml";

#[derive(Debug, Parser)]
#[command(
    name = "edged",
    version,
    propagate_version = true,
    about = "Relay signed content through an airgapped fleet",
    after_help = "Exit codes: 0 success; 1 the command failed (a file rejected, a segment not verified, fsck found problems); \
                  2 bad command line; 3 invalid configuration; 4 data directory or control socket held by another process; \
                  5 storage failure; 6 the daemon is not running (commands that need it); \
                  7 the store is full (retry once what it holds has propagated)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). EDGED_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: relay segments to and from the configured peers.
    Run(RunArgs),
    /// Fleet certificate authority and node certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Publisher keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Make and check signed segment files (.seg).
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Trust roots: create, sign (one key at a time), inspect and publish the signed document
    /// that says which keys may publish on which channel, with thresholds.
    #[command(subcommand)]
    Root(RootCommand),
    /// Recalls: signed segments that withdraw segments of their channel on every host.
    #[command(subcommand)]
    Recall(RecallCommand),
    /// The sequence history per channel: for each publisher and name, the highest sequence
    /// seen (lower or equal ones are refused as rollbacks) and the last changes.
    Sequences(SequencesArgs),
    /// USB in: store every regular .seg file of DIR (verified; symlinks, FIFOs, devices and other
    /// files are skipped, counted in the summary, and never fail the import), then merge the
    /// fleet receipts of other nodes' need-lists (*.need) there. Exit 1 if a file was rejected;
    /// 7 if a segment did not fit because the store is full of segments still owed to peers.
    Import(ImportArgs),
    /// USB out: write stored segments into DIR as <id>.seg, atomically (or need-lists: --need-list, --for).
    Export(ExportArgs),
    /// List stored segments and their propagation.
    Segments(SegmentsArgs),
    /// Is it everywhere yet? Per segment, which nodes of the fleet hold it, from their signed
    /// receipts (with the daemon running, or from this node's book when it is not).
    Fleet(FleetArgs),
    /// The node at a glance (from the running daemon). `jobs N pending (T trying now, W
    /// waiting)`: every relay job not ended, counted once (T + W = N); the pending column of
    /// `edged segments` adds up to N.
    Status(QueryArgs),
    /// Known peers and their connections (from the running daemon).
    Peers(QueryArgs),
    /// Make the running daemon read its config again (as SIGHUP does) and apply what can change
    /// live: known_peers (jobs scheduled for peers added, cancelled for peers removed, their
    /// connections closed), [relay], trusted publishers, log_level. Prints what changed and the
    /// changed keys that need a restart. An invalid file changes nothing: exit 3.
    Reload(QueryArgs),
    /// Dead letters: relay jobs that exhausted their attempts.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Print a shell completion script (install it where your shell looks, e.g.
    /// /usr/share/bash-completion/completions/edged).
    Completions {
        /// The shell to write it for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (edged.1 and one page per command, edged-import.1, ...) into DIR.
    Man {
        /// Directory to write into (must exist); existing pages of the same names are replaced.
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-verify every stored segment (length, header, signature by a trusted publisher, payload
    /// hash) and quarantine the corrupt. Through the running daemon, or on the data directory
    /// itself when none runs (then the store's open also brings files and index back into
    /// agreement, and what it repaired is reported); also checks the relay ledger against itself
    /// and the store. Exit 0: clean; 1: findings (each listed, also those repaired or
    /// quarantined by this run).
    Fsck(FsckArgs),
    /// Segments quarantined because their stored file failed verification (daemon running or not).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also remove leftovers a running store holds: segment files without an index row, temp
    /// files of no ingest (the store's open removes them by itself); with no daemon running,
    /// rebuild the relay ledger's due list, counts, dead-letter rows and pins from its jobs.
    #[arg(long)]
    pub repair: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Every quarantined segment: id, name, when, and why.
    List(QueryArgs),
    /// Everything known about one quarantined segment.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Segment id or unique prefix (at least 4 hex characters).
        id: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete quarantined files and their records, and say how many bytes that freed.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        /// Segment ids or unique prefixes (at least 4 hex characters).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every quarantined segment.
        #[arg(long)]
        all: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format on stderr (overrides the config's `log_format`).
    #[arg(long, value_parser = ["human", "json"])]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a fleet CA (key + self-signed certificate) in DIR. Keep it offline.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node certificate (DNS name = node id) signed by the fleet CA.
    Issue {
        /// Directory holding the fleet CA (from `ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// Node id: [a-z0-9-]{1,63}.
        #[arg(long)]
        node: String,
        /// Directory to write <node>.crt and <node>.key into.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List(QueryArgs),
    /// Requeue a peer's dead letters (or one segment's) with fresh attempts. Exit 0 also when
    /// there is nothing to requeue (it says so); exit 2 for a peer the node does not know
    /// (the known ones are listed).
    Requeue(DlqTarget),
    /// Remove a peer's dead letters (or one segment's); the segment may then be evicted. Exit 0
    /// also when there is nothing to purge; exit 2 for a peer the node does not know.
    Purge(DlqTarget),
}

#[derive(Debug, Args)]
pub struct DlqTarget {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The peer whose dead letters to act on.
    #[arg(long)]
    pub peer: String,
    /// Only this segment (id or unique prefix of at least 4 hex characters).
    #[arg(long)]
    pub segment: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', env = "EDGED_CONFIG", default_value = CONFIG_DEFAULT)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a publisher key (file mode 0600) and print its public key as the config expects it.
    Gen {
        /// Where to write the secret key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Write an unsigned root document from a spec (TOML: version, expires, root_threshold,
    /// root_keys, [[publisher]] key + channels, [[channel]] name + threshold + expires).
    Create {
        #[arg(long)]
        spec: PathBuf,
        /// The root file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Add one key's signature to a root file (run on that key's machine).
    Sign {
        /// Secret key file.
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Show a root file and whether it is valid (signed by its own threshold of its own root
    /// keys; with --current, also a valid successor of that root). Exit 1 when not.
    Inspect {
        file: PathBuf,
        /// The root in force, to check FILE against it.
        #[arg(long)]
        current: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make a root segment of one or more root files (oldest first, each following the one
    /// before): importing it on any host rotates the fleet.
    Publish {
        /// Secret key file that signs the segment's manifest (integrity only: the roots inside
        /// carry the authority).
        #[arg(long)]
        key: PathBuf,
        /// The segment file to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        roots: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecallCommand {
    /// Make a recall of IDS (full 64-hex segment ids of CHANNEL): every host that receives it
    /// removes them (and their local deliveries) and refuses them from then on.
    Create {
        /// Publisher secret key file; more signatures with `edged segment sign`.
        #[arg(long)]
        key: PathBuf,
        /// The channel of the segments to withdraw (a recall withdraws nothing else).
        #[arg(long)]
        channel: String,
        /// The recall's own name.
        #[arg(long)]
        name: String,
        /// The recall's sequence (default: now, in milliseconds).
        #[arg(long)]
        sequence: Option<u64>,
        /// The segment file to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SequencesArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Add a co-signature to a segment file (for a channel whose root needs k signatures);
    /// the id does not change.
    Sign {
        /// Secret key file.
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// Sign INPUT into a segment file.
    Create(CreateArgs),
    /// Show a segment file's manifest (does not check the signature: use verify).
    Inspect {
        file: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Check a segment file: signature by a trusted key, freshness, payload length and hash.
    Verify {
        /// A trusted publisher key (`ed25519:<hex>`); repeat for several.
        #[arg(long = "trust", required = true)]
        trust: Vec<String>,
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Publisher secret key file (from `edged key gen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Name shown to operators (at most 255 bytes).
    #[arg(long)]
    pub name: String,
    /// Channel ([a-z0-9][a-z0-9._-]*).
    #[arg(long, default_value = store::limits::CHANNEL_DEFAULT)]
    pub channel: String,
    /// Publisher's sequence number for this channel and name: a higher one supersedes the
    /// segment before it, an equal or lower one is refused as a rollback on every host.
    /// Default: the creation time in milliseconds, so each new segment of a name supersedes
    /// the last one made on a machine with a sane clock.
    #[arg(long)]
    pub sequence: Option<u64>,
    /// When the segment counts as propagated: all_peers or one_peer.
    #[arg(long, default_value = "all_peers")]
    pub condition: String,
    /// Lifetime from now, e.g. `30d`, `12h`; none by default.
    #[arg(long)]
    pub expires: Option<humantime::Duration>,
    /// 0..=255, higher is more important (sent first, evicted last).
    #[arg(long, default_value_t = store::limits::PRIORITY_DEFAULT)]
    pub priority: u8,
    /// File to sign.
    pub input: PathBuf,
    /// Segment file to write (written atomically; an existing file is not overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Directory to read (not recursive; never written to).
    pub dir: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Directory to write into (must exist).
    #[arg(long, required_unless_present_any = ["need_list", "for_dir"])]
    pub to: Option<PathBuf>,
    /// Sneakernet: write this node's need-list, <node-id>.need (the ids it holds and the
    /// fleet receipts it knows), into DIR, for a host of another part of the fleet to answer
    /// with `export --for DIR`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "for_dir", "all", "channel", "ids"])]
    pub need_list: Option<PathBuf>,
    /// Sneakernet: read every *.need in DIR and write into DIR the stored segments their nodes
    /// lack, most important first (priority, then newest), skipping ones already there, and
    /// this node's own need-list, so its receipts travel back. Import the stick with
    /// `edged import DIR` on the other side.
    #[arg(long = "for", value_name = "DIR", conflicts_with_all = ["to", "all", "channel", "ids"])]
    pub for_dir: Option<PathBuf>,
    /// With --for: at most this many bytes of segments (default: the free space of DIR's file
    /// system, less a small reserve).
    #[arg(long, value_name = "N", requires = "for_dir")]
    pub max_bytes: Option<u64>,
    /// Export every stored segment.
    #[arg(long, conflicts_with_all = ["channel", "ids"])]
    pub all: bool,
    /// Export the segments of this channel.
    #[arg(long, conflicts_with = "ids")]
    pub channel: Option<String>,
    /// Segment ids or unique prefixes (at least 4 hex characters).
    pub ids: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Every node of the roster with its state and receipt time for this segment (an id or a
    /// unique prefix of at least 4 hex characters).
    #[arg(long, value_name = "ID", conflicts_with = "node")]
    pub segment: Option<String>,
    /// What this node holds and lacks, among the segments receipts name.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Print JSON for scripts: {"roster", "stale_after_ms", "now_ms", "segments": [...]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SegmentsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// List the recalled segment ids instead (withdrawn and refused for good), each with the
    /// recall that named it and when it was applied here.
    #[arg(long)]
    pub recalled: bool,
}
