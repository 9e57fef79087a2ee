//! Applications of ML-Mat-VAMP (paper Section 2) and their baselines.
//!
//! * [`two_layer`] — learning the input layer `F_1` of a two-layer network
//!   `Y = σ(X F_1) F_2 + Ξ` (paper Section 2.3, eq. 7–9; experiment of Section 5 / Figure 2):
//!   data generation (spec §7.1), initialisation (spec §7.2), the held-out test MSE and the
//!   analytic test error of eq. (17) (spec §7.4);
//! * [`adam`] — the ADAM-MAP baseline of Figure 2 (spec §7.3), hand-written on `faer`;
//! * [`two_layer_vamp`] — ML-Mat-VAMP on the same problem as a three-factor network through
//!   the general engine (spec §3.4, §7.2);
//! * [`mmv`] — multi-task regression / MMV (paper §2.1, eq. 4–5): data, the networks for the
//!   Bernoulli–Gaussian (MMSE) and group-lasso (MAP) estimators, and the FISTA group-lasso baseline;
//! * [`mixed`] — mixed linear regression (paper Section 2.1, eq. 6): problems, the asymmetric
//!   random start, the parameter error up to relabelling, and the alternating-minimisation
//!   baseline;
//! * [`inpaint`] — inpainting with a deep generative prior (paper §2.4, eq. 10, `L = 4`) and its
//!   latent-code Adam baseline;
//! * [`sketch`] — the sketch of sketched clustering (paper §2.2): frequencies, the one-pass
//!   mergeable sketch, its exact re-centring;
//! * [`cluster`] — centroids from a sketch by ML-Mat-VAMP (paper §2.2): the network, cluster
//!   weights by non-negative least squares, seeded restarts, and the clustering metrics.

pub mod adam;
pub mod cluster;
pub mod inpaint;
pub mod mixed;
pub mod mmv;
pub mod sketch;
pub mod two_layer;
pub mod two_layer_vamp;
