use faer::Par;
use mlmatvamp::prelude::*;
fn main() {
    let mut rng = rng_from_seed(1);
    let w = standard_normal(3000, 1500, &mut rng);
    let r = standard_normal(3000, 4, &mut rng);
    faer::set_global_parallelism(Par::rayon(2));
    let svd = w.thin_svd().unwrap();
    let p = svd.U().transpose() * &r;
    let q = svd.U() * &p;
    println!(
        "{:e} {:e} {:e} {:e}",
        svd.S()[0],
        svd.U()[(0, 0)],
        p[(3, 2)],
        q[(7, 1)]
    );
}
