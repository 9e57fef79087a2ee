fn main() {
    println!("mlmatvamp");
}
