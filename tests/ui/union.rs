use brainstate::Stateful;

#[derive(Stateful)]
union Bits {
    a: u32,
    b: f32,
}

fn main() {}
