//! Who is whose peer: a line, a ring or a full mesh of `n` nodes, chosen from the seed.

use rand::Rng;

/// The shape of the fleet's peer graph. Links are undirected: each node's `known_peers` are its
/// neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// n0 — n1 — … — n(k-1): the longest relay chain for its size.
    Line,
    /// A line closed into a cycle: two routes to every node.
    Ring,
    /// Everyone knows everyone.
    Mesh,
}

impl Topology {
    /// One of the three, uniformly.
    pub fn draw(rng: &mut impl Rng) -> Topology {
        match rng.random_range(0..3u8) {
            0 => Topology::Line,
            1 => Topology::Ring,
            _ => Topology::Mesh,
        }
    }

    /// The undirected edges `(a, b)`, `a < b`, of `n` nodes, in order.
    pub fn edges(self, n: usize) -> Vec<(usize, usize)> {
        let line = (1..n).map(|i| (i - 1, i));
        match self {
            Topology::Line => line.collect(),
            // Below three nodes a ring is a line (its closing edge would repeat one).
            Topology::Ring if n >= 3 => line.chain(std::iter::once((0, n - 1))).collect(),
            Topology::Ring => line.collect(),
            Topology::Mesh => (0..n)
                .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                .collect(),
        }
    }

    /// The neighbours of each node.
    pub fn neighbours(self, n: usize) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); n];
        for (a, b) in self.edges(n) {
            out[a].push(b);
            out[b].push(a);
        }
        for list in &mut out {
            list.sort_unstable();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_their_edge_counts() {
        assert_eq!(Topology::Line.edges(4), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(Topology::Ring.edges(4).len(), 4);
        assert_eq!(Topology::Ring.edges(2), vec![(0, 1)]);
        assert_eq!(Topology::Mesh.edges(4).len(), 6);
        assert_eq!(Topology::Ring.neighbours(4)[0], vec![1, 3]);
    }
}
