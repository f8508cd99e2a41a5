use brainstate::Stateful;

#[derive(Stateful)]
enum Layer {
    A,
    B,
}

fn main() {}
