use brainstate::{NodeName, Stateful};

#[derive(Stateful)]
#[stateful(type_name = "my-lif")]
struct Lif {
    #[stateful(name)]
    name: NodeName,
}

fn main() {}
