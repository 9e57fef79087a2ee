//! Applications of ML-Mat-VAMP (paper Section 2) and their baselines.
//!
//! * [`two_layer`] — learning the input layer `F_1` of a two-layer network
//!   `Y = σ(X F_1) F_2 + Ξ` (paper Section 2.3, eq. 7–9; experiment of Section 5 / Figure 2):
//!   data generation (spec §7.1), initialisation (spec §7.2), the held-out test MSE and the
//!   analytic test error of eq. (17) (spec §7.4);
//! * [`adam`] — the ADAM-MAP baseline of Figure 2 (spec §7.3), hand-written on `faer`;
//! * [`inpaint`] — inpainting with a deep generative prior (paper §2.4, eq. 10, `L = 4`) and its
//!   latent-code Adam baseline.

pub mod adam;
pub mod inpaint;
pub mod two_layer;
