use brainstate::{NodeName, Stateful};

#[derive(Stateful)]
struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(name)]
    other: NodeName,
}

fn main() {}
