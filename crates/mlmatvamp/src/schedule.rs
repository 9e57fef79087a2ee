//! The schedule of Algorithm 1, written once.
//!
//! One iteration is a forward pass — the prior, then layers `1 … L−1` — and a backward pass —
//! the output, then layers `L−1 … 1` (spec §2.3, with the corrected indices). What flows along
//! the chain differs: the algorithm passes Gaussian messages `(R, Γ)`
//! ([`crate::solver::Solver`]), the state evolution passes their laws
//! ([`crate::se::StateEvolution`]). Both implement [`Schedule`] and share these two functions,
//! so there is no second copy of the algorithm.

use crate::error::Result;

/// One step per factor of the chain; `Fwd` flows forward (about `Z_l`, out of factor `l`),
/// `Bwd` flows backward (about `Z_{l−1}`, out of factor `l`).
pub trait Schedule {
    /// What a forward step produces about `Z_l` (a message, or its law).
    type Fwd;
    /// What a backward step produces about `Z_{l−1}`.
    type Bwd;
    /// Lines 4–7: `G⁺_0` on the backward message about `Z_0`; `prev` is the previous forward
    /// output about `Z_0` (for damping).
    fn prior(&mut self, minus: &Self::Bwd, prev: Option<&Self::Fwd>) -> Result<Self::Fwd>;
    /// Lines 9–12: `G⁺_l` on `(R⁻_{kl}, R⁺_{k,l−1})`, producing the forward output about `Z_l`.
    fn layer_forward(
        &mut self,
        l: usize,
        minus: &Self::Bwd,
        plus_in: &Self::Fwd,
        prev: Option<&Self::Fwd>,
    ) -> Result<Self::Fwd>;
    /// Lines 15–18: `G⁻_L` on `R⁺_{k,L−1}`, producing the backward output about `Z_{L−1}`.
    fn output(&mut self, plus: &Self::Fwd, prev: &Self::Bwd) -> Result<Self::Bwd>;
    /// Lines 20–23: `G⁻_l` on `(R⁻_{k+1,l}, R⁺_{k,l−1})`, producing the backward output about `Z_{l−1}`.
    fn layer_backward(
        &mut self,
        l: usize,
        minus: &Self::Bwd,
        plus_in: &Self::Fwd,
        prev: &Self::Bwd,
    ) -> Result<Self::Bwd>;
}

/// The forward pass: `plus[0] ← prior(minus[0])`, then `plus[l] ← G⁺_l(minus[l], plus[l−1])`.
pub fn forward_pass<S: Schedule>(
    s: &mut S,
    plus: &mut [Option<S::Fwd>],
    minus: &[S::Bwd],
) -> Result<()> {
    check_lengths(plus.len(), minus.len())?;
    let mut prev = s.prior(&minus[0], plus[0].as_ref())?;
    for l in 1..plus.len() {
        let new = s.layer_forward(l, &minus[l], &prev, plus[l].as_ref())?;
        plus[l - 1] = Some(std::mem::replace(&mut prev, new));
    }
    let last = plus.len() - 1;
    plus[last] = Some(prev);
    Ok(())
}

/// The chain has `L ≥ 1` variables, with one forward and one backward slot each.
fn check_lengths(plus: usize, minus: usize) -> Result<()> {
    if plus == 0 || plus != minus {
        return Err(crate::error::Error::invalid(
            "schedule",
            format!(
                "a chain needs one forward and one backward slot per variable (at least one), got {plus} and {minus}"
            ),
        ));
    }
    Ok(())
}

/// The backward pass: `minus[L−1] ← output(plus[L−1])`, then for `l = L−1 … 1`,
/// `minus[l−1] ← G⁻_l(minus[l], plus[l−1])` — each new backward output is about the variable
/// the factor just estimated (lines 18 and 23 as corrected).
pub fn backward_pass<S: Schedule>(
    s: &mut S,
    plus: &[Option<S::Fwd>],
    minus: &mut [S::Bwd],
) -> Result<()> {
    check_lengths(plus.len(), minus.len())?;
    let missing = || {
        crate::error::Error::invalid(
            "schedule",
            "the backward pass needs the forward outputs of this iteration: run the forward pass first",
        )
    };
    let last = minus.len() - 1;
    let plus_last = plus[last].as_ref().ok_or_else(missing)?;
    minus[last] = s.output(plus_last, &minus[last])?;
    for l in (1..=last).rev() {
        let plus_in = plus[l - 1].as_ref().ok_or_else(missing)?;
        minus[l - 1] = s.layer_backward(l, &minus[l], plus_in, &minus[l - 1])?;
    }
    Ok(())
}
